import pickle

import pytest
import torch

from torch_backswap import (
    BackgroundBank,
    BackgroundSwap,
    EdgeRefiner,
    PatchSegmenter,
    StampBirds,
)
from torch_backswap._io import BackswapFileError
from torch_backswap.labels import dense_to_patch_grid
from torch_backswap.metrics import mask_iou
from torch_backswap.refine import (
    cut_out_probability,
    flip_average_logits,
    refine_probability,
)
from torch_backswap.segmenter import logits_to_probability
from torch_backswap.cutout import CutOut

pytestmark = pytest.mark.usefixtures("one_thread")


def _discs(n: int = 12, size: int = 64, seed: int = 0):
    """Bright discs on textured dark backgrounds: uint8 images (n,3,size,size), alpha (n,1,size,size) and the
    probability a coarse 16-cell segmenter would give (cell coverage as logits, bilinear)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    images = (torch.rand(n, 3, size, size, generator=g) * 90).to(torch.uint8)
    alpha = torch.zeros(n, 1, size, size)
    for i in range(n):
        cy, cx = (16 + 32 * torch.rand(2, generator=g)).tolist()
        r = 7 + 8 * float(torch.rand(1, generator=g))
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r
        alpha[i, 0] = disc.float()
        colour = (150 + 100 * torch.rand(3, 1, generator=g)).to(torch.uint8)
        images[i][:, disc] = colour.expand(3, int(disc.sum()))
    coverage = torch.nn.functional.avg_pool2d(alpha, size // 16)[:, 0]
    prob = logits_to_probability((coverage - 0.25) * 12, (size, size))
    return images, alpha, prob


def test_an_untrained_refiner_is_the_guided_filter():
    images, _, prob = _discs(4)
    refiner = EdgeRefiner()
    guided = refine_probability(prob, images, method="guided", radius=refiner.guided_radius, eps=refiner.guided_eps)
    out = refiner.predict_probability(images, prob)
    assert out.shape == (4, 1, 64, 64) and out.dtype == torch.float32
    # the zero-initialised output layer adds nothing; the logit/sigmoid round trip is exact up to the 1e-4 clamp
    inside = (guided > 1e-4) & (guided < 1 - 1e-4)
    assert torch.allclose(out[inside], guided[inside], atol=1e-5)


def test_other_sizes_run_at_the_work_size_and_come_back():
    images, _, prob = _discs(2)
    big = torch.nn.functional.interpolate(images.float(), size=(96, 80), mode="bilinear").to(torch.uint8)
    big_prob = torch.nn.functional.interpolate(prob, size=(96, 80), mode="bilinear")
    out = EdgeRefiner().predict_probability(big, big_prob)
    assert out.shape == (2, 1, 96, 80) and float(out.min()) >= 0 and float(out.max()) <= 1
    native = EdgeRefiner(work_size=None).predict_probability(big, big_prob)
    assert native.shape == (2, 1, 96, 80) and not torch.equal(out, native)
    with pytest.raises(ValueError, match="probability must be a"):
        EdgeRefiner().predict_probability(images, prob[:, 0])
    with pytest.raises(ValueError, match="work_size must be"):
        EdgeRefiner(work_size=4)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(1)
    refiner = EdgeRefiner(width=8, dilations=(1, 2))
    with torch.no_grad():
        refiner.out.weight.normal_()  # not the guided filter any more
    refiner.save_pretrained(tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = EdgeRefiner.from_pretrained(tmp_path / "r")
    assert loaded.config == refiner.config and not loaded.training
    images, _, prob = _discs(2)
    assert torch.equal(loaded.predict_probability(images, prob), refiner.predict_probability(images, prob))
    (tmp_path / "r" / "config.json").write_text('{"width": 0}')
    with pytest.raises(BackswapFileError, match="invalid edge refiner config: width must be a positive int"):
        EdgeRefiner.from_pretrained(tmp_path / "r")


def test_bundled_refiner_follows_the_outline_better_than_the_cells():
    """The bundled weights (trained on non-bird stamp composites only) on unseen birds: StampBirds val, the bundled
    segmenter zero-shot. Tighter than the bilinear probability and than the guided filter it starts from."""
    data = StampBirds(split="val", n=48, image_size=64, seed=0, background_holdout="crop")
    segmenter, refiner = PatchSegmenter.from_pretrained(), EdgeRefiner.from_pretrained()  # offline: bundled
    prob = logits_to_probability(flip_average_logits(segmenter, data.images), (64, 64))
    truth = data.alpha > 0.5
    refined = mask_iou(refiner.predict_probability(data.images, prob) > 0.5, truth)
    guided = refine_probability(prob, data.images, method="guided", radius=refiner.guided_radius,
                                eps=refiner.guided_eps)
    assert refined > mask_iou(prob > 0.5, truth) + 0.05
    assert refined > mask_iou(guided > 0.5, truth) + 0.01


class _CellSegmenter(torch.nn.Module):
    """A fixed 'segmenter': the 16-cell coverage of bright pixels, as logits."""

    grid_size = 16

    def forward(self, images):
        bright = (images.float().mean(1, keepdim=True) > 120).float()
        cells = torch.nn.functional.adaptive_avg_pool2d(bright, 16)[:, 0]
        return (cells - 0.25) * 12


def test_swap_takes_a_learned_refiner_and_pickles_it_to_the_cpu():
    images, _, _ = _discs(6)
    seg, refiner = _CellSegmenter(), EdgeRefiner()
    expected = refiner.predict_probability(images, logits_to_probability(seg(images), (64, 64)))
    assert torch.equal(cut_out_probability(seg, images, refiner=refiner), expected)
    bank = BackgroundBank(torch.zeros(4, 3, 64, 64, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    swap = BackgroundSwap(bank, CutOut(seg, refiner, tight_threshold=0.5), seed=0)
    assert swap.cut_out.refiner is refiner and "refiner" in dict(swap.cut_out.named_children())
    out = swap.swap_batch(images, torch.tensor([0, 1, 0, 1, 0, 1]))
    again = pickle.loads(pickle.dumps(swap)).swap_batch(images, torch.tensor([0, 1, 0, 1, 0, 1]))
    assert out.shape == images.shape and torch.equal(out, again)
    with pytest.raises(TypeError, match="refiner must be None, 'guided', 'bilateral' or a learned refiner"):
        BackgroundSwap(bank, CutOut(seg, 3))
    with pytest.raises(ValueError, match="refiner"):
        BackgroundSwap(bank, CutOut(seg, "sharpen"))


def test_cell_labels_of_the_discs_are_what_a_person_would_mark():
    # guards the fixture above: the coarse probability is the one a 16-cell labelling gives
    _, alpha, prob = _discs(3)
    grid = dense_to_patch_grid(alpha, 16, threshold=0.25)
    coarse = torch.nn.functional.avg_pool2d(prob, 4)[:, 0] > 0.5
    assert (coarse == grid).float().mean() > 0.95


def test_from_pretrained_swap_uses_the_edge_route_unless_told_otherwise():
    bank = BackgroundBank(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1]))
    swap = BackgroundSwap.from_pretrained("torch-backswap/patchseg-tiny-s16", bank, seed=0)
    assert isinstance(swap.cut_out.refiner, EdgeRefiner) and swap.cut_out.flip_average and swap.cut_out.tight_threshold == 0.5
    plain = BackgroundSwap.from_pretrained("torch-backswap/patchseg-tiny-s16", bank, refiner=None)
    assert plain.cut_out.refiner is None and not plain.cut_out.flip_average and plain.cut_out.tight_threshold == 0.67
    guided = BackgroundSwap.from_pretrained("torch-backswap/patchseg-tiny-s16", bank, tight_threshold=0.6, refiner="guided")
    assert guided.cut_out.refiner == "guided" and guided.cut_out.tight_threshold == 0.6
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert swap.swap_batch(images, torch.tensor([0, 1])).shape == images.shape
