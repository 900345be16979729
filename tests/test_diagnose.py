"""background_gap: a background-reading model shows the full gap, an object-reading one none."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision import tv_tensors

from benchmarks.paper_fixtures import _BG_COLOURS, write_imagenet9
from torch_backswap.alpha import ObjectAlpha
from torch_backswap.bank import BackgroundBank
from torch_backswap.diagnose import background_gap, imagenet9_bg_gap, mean_interval, t_quantile

S = 16
BG = torch.tensor([[30, 160, 40], [40, 60, 200], [200, 190, 120]], dtype=torch.uint8)  # per class
FG = torch.tensor([[250, 30, 30], [250, 250, 250], [20, 20, 20]], dtype=torch.uint8)


def _scene(labels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N,3,S,S): the object (a square of the class colour at a random place) on its class's background."""
    n = len(labels)
    images = BG[labels][:, :, None, None].expand(n, 3, S, S).clone()
    alpha = torch.zeros(n, 1, S, S)
    for i in range(n):
        x, y = torch.randint(2, S - 8, (2,), generator=generator).tolist()
        alpha[i, 0, y : y + 6, x : x + 6] = 1
        images[i, :, y : y + 6, x : x + 6] = FG[labels[i]][:, None, None]
    return images, alpha


def _nearest(colours: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    return torch.cdist(colours, palette.float() / 255).argmin(1)


def background_model(x: torch.Tensor) -> torch.Tensor:
    """Reads the top-left pixel (always background here): pure background reliance."""
    return torch.nn.functional.one_hot(_nearest(x[:, :, 0, 0], BG), 3).float()


def object_model(x: torch.Tensor) -> torch.Tensor:
    """Finds the most saturated-or-extreme pixel colour among FG colours: pure object recognition."""
    flat = x.flatten(2).transpose(1, 2)  # (B, HW, 3)
    dist = torch.cdist(flat, FG.float()[None] / 255)  # (B, HW, 3)
    return (-dist.min(1).values).softmax(1)


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    images, alpha = _scene(labels, g)
    bank_labels = torch.arange(30) % 3
    bank = BackgroundBank(BG[bank_labels][:, :, None, None].expand(30, 3, S, S).contiguous(), bank_labels)
    return images, labels, alpha, bank


def test_background_model_has_the_full_gap_object_model_none(setup):
    images, labels, alpha, bank = setup
    bg = background_gap(background_model, (images, labels), bank, alphas=alpha, draws=2)
    assert bg.original_accuracy == 1.0 and bg.own_accuracy == 1.0 and bg.other_accuracy == 0.0
    assert bg.gap == 1.0 and bg.ci_low == pytest.approx(1.0) and bg.n == 60
    obj = background_gap(object_model, (images, labels), bank, alphas=alpha, draws=2)
    assert obj.own_accuracy == obj.other_accuracy == 1.0 and obj.gap == 0.0
    assert "paired t-interval" in obj.method


def test_interval_covers_a_partial_gap_and_bootstrap_agrees(setup):
    images, labels, alpha, bank = setup

    def half_model(x):  # background for class 0, object otherwise: gap = 1/3 in expectation
        out = object_model(x)
        bg = background_model(x)
        use_bg = bg.argmax(1) == 0
        out[use_bg] = bg[use_bg]
        return out

    t = background_gap(half_model, (images, labels), bank, alphas=alpha, draws=2, seed=1)
    assert 0 < t.gap < 1 and t.ci_low < t.gap < t.ci_high
    boot = background_gap(half_model, (images, labels), bank, alphas=alpha, draws=2, seed=1, ci="bootstrap")
    assert boot.gap == t.gap and "bootstrap" in boot.method
    assert abs((boot.ci_high - boot.ci_low) - (t.ci_high - t.ci_low)) < 0.5 * (t.ci_high - t.ci_low)


def test_alpha_from_a_dataset_of_object_alpha_dicts_or_a_segmenter(setup):
    images, labels, alpha, bank = setup
    items = [{"image": tv_tensors.Image(images[i]), "alpha": ObjectAlpha(alpha[i]), "label": int(labels[i])}
             for i in range(len(labels))]
    from_dicts = background_gap(background_model, items, bank, draws=1, seed=3)
    given = background_gap(background_model, (images, labels), bank, alphas=alpha, draws=1, seed=3)
    assert torch.equal(from_dicts.own_correct, given.own_correct)

    class Oracle:  # a segmenter whose cells are the pixels: its cut-out is the true alpha
        def __call__(self, x):
            index = [int((images == xi).all(dim=(1, 2, 3)).nonzero()[0]) for xi in x]
            return (alpha[index][:, 0].float() * 2 - 1) * 20

    seg = background_gap(background_model, (images, labels), bank, segmenter=Oracle(), draws=1, seed=3)
    assert torch.equal(seg.other_correct, given.other_correct)
    with pytest.raises(ValueError, match="alphas= or segmenter="):
        background_gap(background_model, (images, labels), bank)


def test_empty_alpha_is_skipped_and_counted(setup):
    images, labels, alpha, bank = setup
    alpha = alpha.clone()
    alpha[:5] = 0
    res = background_gap(object_model, (images, labels), bank, alphas=alpha)
    assert res.n == 55 and res.skipped == 5


def test_clear_errors(setup):
    images, labels, alpha, bank = setup
    two_class = BackgroundBank(bank.backgrounds[bank.labels < 2].contiguous(), bank.labels[bank.labels < 2])
    with pytest.raises(ValueError, match="no background of class 2"):
        background_gap(object_model, (images, labels), two_class, alphas=alpha)
    with pytest.raises(ValueError, match="ci must be one of"):
        background_gap(object_model, (images, labels), bank, alphas=alpha, ci="wald")
    with pytest.raises(ValueError, match=r"alphas must be \(N,1,H,W\)"):
        background_gap(object_model, (images, labels), bank, alphas=alpha[:3])


def test_t_quantile_matches_the_tables():
    assert t_quantile(0.975, 1) == pytest.approx(12.706, abs=2e-3)
    assert t_quantile(0.975, 10) == pytest.approx(2.228, abs=1e-3)
    assert t_quantile(0.95, 30) == pytest.approx(1.697, abs=1e-3)
    assert t_quantile(0.975, 5000) == pytest.approx(1.960, abs=1e-3)
    mean, low, high = mean_interval(torch.tensor([1.0, 2.0, 3.0]))
    assert mean == 2.0 and high - mean == pytest.approx(t_quantile(0.975, 2) / math.sqrt(3))


def test_imagenet9_official_protocol_on_the_folders(tmp_path):
    write_imagenet9(tmp_path, per_class=2, variants=("mixed_same", "mixed_rand"))
    palette = torch.tensor(_BG_COLOURS, dtype=torch.uint8)

    def border_model(x):  # the top row is background in every fixture image
        return torch.nn.functional.one_hot(_nearest(x[:, :, 0, :].mean(2), palette), 9).float()

    res = imagenet9_bg_gap(border_model, str(tmp_path), size=32)
    assert res.own_accuracy == 1.0 and res.other_accuracy == 0.0 and res.gap == 1.0
    assert res.n == 18 and "paired" in res.method and "mixed_same vs mixed_rand" in res.method


def test_cli_diagnose_on_a_folder_and_on_imagenet9(tmp_path, capsys):
    import json

    from PIL import Image
    from safetensors.torch import save_file

    from torch_backswap.cli import main
    from torch_backswap.classifiers import build_classifier

    g = torch.Generator().manual_seed(1)
    labels = torch.arange(6) % 3
    images, _ = _scene(labels, g)
    for i, (img, y) in enumerate(zip(images, labels.tolist())):
        folder = tmp_path / "test" / f"class {y}"  # spaces in class folders are fine
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    bank_labels = torch.arange(9) % 3
    BackgroundBank(BG[bank_labels][:, :, None, None].expand(9, 3, 32, 32).contiguous(), bank_labels,
                   classes=["class 0", "class 1", "class 2"]).save(tmp_path / "bank.safetensors")
    model = build_classifier("small_cnn", num_classes=9)
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    out = tmp_path / "gap.json"
    common = ["--model", "small_cnn", "--weights", str(tmp_path / "model.safetensors"), "--size", "32", "--quiet"]
    assert main(["diagnose", str(tmp_path / "test"), "--bank", str(tmp_path / "bank.safetensors"), "--num-classes", "9",
                 "--json", str(out), *common]) == 0
    result = json.loads(out.read_text())
    assert result["n"] + result["skipped"] == 6 and "BG-gap" in capsys.readouterr().out
    write_imagenet9(tmp_path / "in9", per_class=1, variants=("mixed_same", "mixed_rand"))
    assert main(["diagnose", "--imagenet9", str(tmp_path / "in9"), "--num-classes", "9", "--json", str(out),
                 *common]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 9 and "mixed_same vs mixed_rand" in result["method"]
