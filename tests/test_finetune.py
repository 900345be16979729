import json

import pytest
import torch
import torch.nn.functional as F

from torch_backswap import cli
from torch_backswap.finetune import PatchAugmentation, evaluate_segmenter, finetune_segmenter, shift_cells
from torch_backswap.labels import PatchLabels, dense_to_patch_grid
from torch_backswap.segmenter import PatchSegmenter

SMALL = {"input_size": 32, "width": 8}


pytestmark = pytest.mark.usefixtures("one_thread")


def make_shapes(n: int, size: int = 32, seed: int = 0):
    """Bright textured ellipses on smooth coloured backgrounds: uint8 images (N,3,size,size), masks (N,size,size)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images, masks = torch.empty(n, 3, size, size), torch.empty(n, size, size)
    for i in range(n):
        c0, c1 = torch.rand(3, 1, 1, generator=g) * 0.5, torch.rand(3, 1, 1, generator=g) * 0.5
        background = c0 * (1 - xx) + c1 * xx
        cy, cx = (0.3 + 0.4 * torch.rand(2, generator=g)).tolist()
        ry, rx = (0.15 + 0.15 * torch.rand(2, generator=g)).tolist()
        mask = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).float()
        foreground = 0.6 + 0.3 * torch.rand(3, 1, 1, generator=g) + 0.1 * torch.sin(xx * 40)
        images[i] = (background * (1 - mask) + foreground * mask).clamp(0, 1)
        masks[i] = mask
    return (images * 255).round().to(torch.uint8), masks


@pytest.fixture(scope="module")
def shapes():
    images, masks = make_shapes(48)
    labels = PatchLabels.from_dense_masks(masks, [f"img{i:03d}.png" for i in range(48)], 4, drop_empty=False)
    return images, labels


def test_finetune_smoke_reduces_loss_and_saves(tmp_path, shapes):
    images, labels = shapes
    model, history = finetune_segmenter(None, images, labels, epochs=6, batch_size=8, seed=0, progress=False,
                                        output_dir=tmp_path / "out", scratch_kwargs=SMALL)
    assert isinstance(model, PatchSegmenter) and not model.training
    assert len(history) == 6
    assert set(history[0]) >= {"epoch", "train_loss", "val_loss", "val_balanced_accuracy", "lr", "best"}
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    best = max(h["val_balanced_accuracy"] for h in history)
    assert best > 0.8
    saved = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert saved == ["README.md", "config.json", "history.json", "model.safetensors"]
    record = json.loads((tmp_path / "out" / "history.json").read_text())
    assert len(record["history"]) == 6 and record["n_val"] == 10 and not record["interrupted"]
    # the saved model is the selected (best) one
    reloaded = PatchSegmenter.from_pretrained(tmp_path / "out")
    x = images[:3]
    with torch.no_grad():
        assert torch.equal(reloaded(x), model(x))


def test_finetune_deterministic_and_leaves_rng_alone(shapes):
    images, labels = shapes
    labels = labels.subset(labels.ids[:20])
    images = images[:20]
    state = torch.get_rng_state()
    runs = [finetune_segmenter(None, images, labels, epochs=2, batch_size=8, seed=3, progress=False,
                               scratch_kwargs=SMALL) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), state)
    (a, ha), (b, hb) = runs
    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert strip(ha) == strip(hb)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    # a given model is not modified
    start = PatchSegmenter(grid_size=4, **SMALL)
    before = {k: v.clone() for k, v in start.state_dict().items()}
    finetune_segmenter(start, images, labels, epochs=1, batch_size=8, progress=False)
    assert all(torch.equal(v, start.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="grid_size"):
        finetune_segmenter(PatchSegmenter(grid_size=8, **SMALL), images, labels, epochs=1, progress=False)


def test_keyboard_interrupt_keeps_best(tmp_path, shapes, monkeypatch):
    import torch_backswap.finetune as ft

    images, labels = shapes
    real = ft.evaluate_segmenter
    calls = {"n": 0}

    def interrupt_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ft, "evaluate_segmenter", interrupt_on_second)
    with pytest.warns(UserWarning, match="interrupted"):
        model, history = finetune_segmenter(None, images[:20], labels.subset(labels.ids[:20]), epochs=5,
                                            batch_size=8, progress=False, output_dir=tmp_path / "out",
                                            scratch_kwargs=SMALL)
    assert len(history) == 1
    record = json.loads((tmp_path / "out" / "history.json").read_text())
    assert record["interrupted"] and (tmp_path / "out" / "model.safetensors").is_file()


def test_augmentation_keeps_image_and_grid_aligned():
    torch.manual_seed(0)
    grids = torch.rand(16, 8, 8) > 0.6
    images = F.interpolate(grids.float()[:, None], size=(32, 32), mode="nearest").expand(-1, 3, -1, -1)
    aug_images, aug_grids = PatchAugmentation(2, colour=(0, 0, 0, 0), p_gray=0.0)(images.clone(), grids.float())
    back = F.adaptive_avg_pool2d(aug_images[:, :1], 8)[:, 0]
    assert torch.equal(back, aug_grids)
    assert not torch.equal(aug_grids, grids.float())  # something happened
    # shift by whole cells with zero fill
    img, grid = shift_cells(images[:1], grids[:1].float(), torch.tensor([[1, -2]]))
    assert torch.equal(grid[0, 1:, :-2], grids[0, :-1, 2:].float()) and grid[0, 0].eq(0).all()
    assert img[0, :, :4].eq(0).all() and img[0, :, :, -8:].eq(0).all()
    # colour jitter stays in range
    jittered, _ = PatchAugmentation(0)(torch.rand(8, 3, 16, 16), torch.zeros(8, 4, 4))
    assert 0 <= jittered.min() and jittered.max() <= 1
    # every flip / quarter turn of the dihedral group shows up, each applied to image and grid together
    seen = set()
    for _ in range(6):
        out, g = PatchAugmentation(0, colour=(0, 0, 0, 0), p_gray=0.0)(images, grids.float())
        for i in range(len(grids)):
            for f in (False, True):
                for k in (-1, 0, 1):
                    ref = grids[i].flip(-1) if f else grids[i]
                    if torch.equal(g[i], ref.rot90(k, (-2, -1)).float()):
                        seen.add((f, k))
    assert len(seen) == 6


def test_evaluate_segmenter_scores_perfect_and_inverted_predictions():
    class Oracle(torch.nn.Module):
        input_size = 32

        def __init__(self, grids, sign):
            super().__init__()
            self.grids, self.sign = grids, sign
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return self.sign * (self.grids[: x.shape[0]].float() * 2 - 1) * 5

        def predict_logits(self, x):
            return self.forward(x)

    grids = torch.rand(6, 4, 4) > 0.5
    images = torch.zeros(6, 3, 32, 32, dtype=torch.uint8)
    good = evaluate_segmenter(Oracle(grids, 1), images, grids, batch_size=6)
    bad = evaluate_segmenter(Oracle(grids, -1), images, grids, batch_size=6)
    assert good["val_balanced_accuracy"] == 1.0 and good["val_cell_iou"] == 1.0
    assert bad["val_balanced_accuracy"] == 0.0 and bad["val_loss"] > good["val_loss"]


def test_cli_finetune_from_image_folder(tmp_path, shapes, capsys):
    from PIL import Image

    images, labels = shapes
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    ids = []
    for i in range(16):
        image_id = f"sub/{i}.png" if i % 2 else f"{i}"  # relative paths, extension optional
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(folder / (image_id if i % 2 else f"{i}.png"))
        ids.append(image_id)
    grids = dense_to_patch_grid(F.interpolate(labels.grids[:16].float()[:, None], size=(32, 32)), 4)
    PatchLabels(ids, grids).write(tmp_path / "labels.csv")
    start = PatchSegmenter(grid_size=4, **SMALL)
    start.save_pretrained(tmp_path / "start")
    code = cli.main(["finetune", str(folder), str(tmp_path / "labels.csv"), "--out", str(tmp_path / "out"),
                     "--from", str(tmp_path / "start"), "--epochs", "2", "--batch-size", "8", "--no-progress"])
    assert code == 0
    assert "balanced accuracy" in capsys.readouterr().out
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert "finetune" in cli.build_parser().format_help()
