import json
import pickle

import pytest
import torch

from torch_backswap import hub
from torch_backswap.segmenter import (
    BACKBONES,
    LOOSE_THRESHOLD,
    TIGHT_THRESHOLD,
    PatchSegmenter,
    logits_to_probability,
    probability_to_mask,
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("backbone", BACKBONES)
def test_shapes_every_backbone(backbone):
    model = PatchSegmenter(grid_size=8, backbone=backbone, input_size=64).eval()
    with torch.no_grad():
        out = model(torch.randint(0, 256, (2, 3, 50, 70), dtype=torch.uint8))
    assert out.shape == (2, 8, 8) and out.dtype == torch.float32


@pytest.mark.parametrize(
    "images",
    [
        torch.randint(0, 256, (1, 3, 37, 91), dtype=torch.uint8),  # uint8, odd size, batch of 1
        torch.rand(3, 3, 128, 128),  # float, already input size
        torch.rand(2, 1, 33, 33),  # grayscale
        torch.rand(2, 4, 64, 40),  # RGBA
        torch.rand(2, 3, 300, 17, dtype=torch.float64),  # other float dtype
    ],
)
def test_tiny_inputs(images):
    model = PatchSegmenter().eval()
    with torch.no_grad():
        logits = model(images)
        prob = model.predict_probability(images)
    b, _, h, w = images.shape
    assert logits.shape == (b, 16, 16) and logits.dtype == torch.float32
    assert prob.shape == (b, 1, h, w) and prob.dtype == torch.float32
    assert 0 <= prob.min() and prob.max() <= 1


def test_uint8_and_float_agree_and_unbatched():
    model = PatchSegmenter(grid_size=4, input_size=32).eval()
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        a = model(images)
        b = model(images.float() / 255)
        c = model(images[0])
    torch.testing.assert_close(a, b)
    assert c.shape == (4, 4)
    torch.testing.assert_close(c, a[0])
    with pytest.raises(ValueError, match="channels"):
        model(torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match="backbone"):
        PatchSegmenter(backbone="vgg")
    with pytest.raises(ValueError, match="grid_size"):
        PatchSegmenter(grid_size=0)


def test_predict_probability_restores_mode_and_size():
    model = PatchSegmenter(grid_size=4, input_size=32).train()
    prob = model.predict_probability(torch.rand(1, 3, 20, 30), size=(10, 12))
    assert prob.shape == (1, 1, 10, 12) and model.training


def test_logits_to_probability_is_smooth():
    logits = torch.full((1, 4, 4), -8.0)
    logits[0, 1:3, 1:3] = 8.0
    prob = logits_to_probability(logits, (64, 64))
    assert prob.shape == (1, 1, 64, 64) and prob.dtype == torch.float32
    values = prob.unique()
    assert len(values) > 10  # bilinear ramps, not nearest-neighbour blocks
    assert prob[0, 0, 32, 32] > 0.99 and prob[0, 0, 2, 2] < 0.01
    same = logits_to_probability(logits, (4, 4))
    torch.testing.assert_close(same, torch.sigmoid(logits)[:, None])


def test_probability_to_mask_hard_and_feathered():
    prob = torch.linspace(0, 1, 101).view(1, 1, 1, 101)
    hard = probability_to_mask(prob, TIGHT_THRESHOLD)
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    assert hard[0, 0, 0, 67] == 0 and hard[0, 0, 0, 68] == 1  # strictly greater
    soft = probability_to_mask(prob, LOOSE_THRESHOLD, feather=0.1)
    assert soft[0, 0, 0, 4] == 0 and soft[0, 0, 0, 16] == 1
    assert soft[0, 0, 0, 10] == pytest.approx(0.5)
    assert (soft.diff(dim=-1) >= 0).all()
    with pytest.raises(ValueError, match="feather"):
        probability_to_mask(prob, 0.5, feather=-1)


def _no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("loading must not unpickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)


@pytest.mark.parametrize("backbone", ["tiny", "mobilenet_v3_small"])
def test_save_load_roundtrip_identical_without_pickle(tmp_path, monkeypatch, backbone):
    torch.manual_seed(0)
    model = PatchSegmenter(grid_size=8, backbone=backbone, input_size=64, width=16, dropout=0.1)
    # make BatchNorm statistics non-trivial so the buffers matter
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 64, 64))
    model.eval()
    model.save_pretrained(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config == {"backbone": backbone, "dropout": 0.1, "grid_size": 8, "input_size": 64,
                      "pretrained_backbone": False, "width": 16}
    _no_unpickling(monkeypatch)
    loaded = PatchSegmenter.from_pretrained(tmp_path / "m")
    assert not loaded.training and loaded.config == config
    images = torch.randint(0, 256, (2, 3, 45, 77), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))


def test_from_pretrained_bundled_and_hub_names(tmp_path, monkeypatch):
    model = PatchSegmenter(grid_size=4, input_size=32, width=8)
    model.save_pretrained(tmp_path / "bundled" / "patchseg-tiny-s16")
    monkeypatch.setattr(hub, "bundled_weight_roots", lambda: [tmp_path / "bundled"])
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing leaves the machine
    _no_unpickling(monkeypatch)
    loaded = PatchSegmenter.from_pretrained(cache_dir=tmp_path / "cache")  # DEFAULT_SEGMENTER
    assert loaded.grid_size == 4
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    overridden = PatchSegmenter.from_pretrained("patchseg-tiny-s16", dropout=0.0, cache_dir=tmp_path / "cache")
    assert overridden.config["dropout"] == 0.0


def test_eval_mode_runs_every_submodule_in_eval_and_restores_each_mode():
    from torch_backswap.segmenter import eval_mode

    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.Sequential(torch.nn.Dropout(), torch.nn.ReLU()))
    model.eval()
    model[1][0].train()  # a module in eval mode with one submodule left training
    before = [m.training for m in model.modules()]
    with eval_mode(model), torch.enable_grad():
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before
    model.train()
    with eval_mode(model) as inner:
        assert inner is model and not any(m.training for m in model.modules()) and not torch.is_grad_enabled()
    assert all(m.training for m in model.modules())
