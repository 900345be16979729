"""Tests for the StampBirds dataset, its asset pack and the generic stamp compositing."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torch_backswap.datasets import StampBirds, composite_stamps, default_root, load_stamp_rgba
from torch_backswap.datasets.stamp_composite import blend_uint8

SMALL = {"train": 200, "val": 40, "test": 80}


def make(split="train", **kwargs):
    kwargs.setdefault("n", SMALL[split])
    return StampBirds(split=split, **kwargs)


@pytest.fixture(scope="module")
def manifest():
    return json.loads((default_root() / "manifest.json").read_text(encoding="utf-8"))


def test_pack_contents(manifest):
    root = default_root()
    assert (root / "COPYING").is_file() and (root / "NOTICE").is_file()
    total = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    assert total < 4_000_000
    for name, entry in manifest["birds"].items():
        with Image.open(root / entry["file"]) as im:
            assert im.mode == "RGBA" and max(im.size) <= 192
    kept = {k: v for k, v in manifest["photos"].items() if not v.get("dropped")}
    for entry in manifest["photos"].values():
        if entry.get("dropped"):
            assert entry["reason"]
    for place in ("water", "land"):
        for split in ("train", "val", "test"):
            assert any(v["place"] == place and v["split"] == split for v in kept.values()), (place, split)
    for label in (0, 1):
        splits = {v["split"] for v in manifest["birds"].values() if v["label"] == label}
        assert splits == {"train", "test"}


@pytest.mark.parametrize("size", [64, 128])
def test_shapes_and_dtypes(size):
    ds = make("val", image_size=size)
    n = len(ds)
    assert n == SMALL["val"]
    assert ds.images.shape == (n, 3, size, size) and ds.images.dtype == torch.uint8
    assert ds.true_backgrounds.shape == (n, 3, size, size) and ds.true_backgrounds.dtype == torch.uint8
    assert ds.alpha.shape == (n, 1, size, size) and ds.alpha.dtype == torch.float32
    for t in (ds.labels, ds.places, ds.groups):
        assert t.shape == (n,) and t.dtype == torch.int64
    assert torch.equal(ds.groups, 2 * ds.labels + ds.places)
    assert torch.equal(ds.backgrounds, ds.places)
    assert ds.classes == ["landbird", "waterbird"]
    image, label = ds[0]
    assert isinstance(image, Image.Image) and image.size == (size, size) and image.mode == "RGB"
    assert label == int(ds.labels[0])


def test_deterministic_under_seed():
    a, b, c = make("train", seed=3), make("train", seed=3), make("train", seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and torch.equal(a.alpha, b.alpha)
    assert not torch.equal(a.images, c.images)


def test_layout_independent_of_size():
    a, b = make("test", image_size=64), make("test", image_size=128)
    assert torch.equal(a.groups, b.groups) and torch.equal(a.photo_ids, b.photo_ids)
    assert torch.equal(a.bird_ids, b.bird_ids)


@pytest.mark.parametrize("split", ["val", "test"])
def test_balanced_groups(split):
    ds = make(split)
    counts = torch.bincount(ds.groups, minlength=4)
    assert counts.tolist() == [len(ds) // 4] * 4


def test_train_correlation():
    full = make("train", correlation=1.0, n=1000)
    assert torch.equal(full.labels, full.places)
    assert abs(int(full.labels.sum()) - 500) <= 1
    partial = make("train", correlation=0.95, n=1000)
    minority = (partial.labels != partial.places).float().mean().item()
    assert minority == pytest.approx(0.05, abs=0.005)
    # all four groups present
    assert (torch.bincount(partial.groups, minlength=4) > 0).all()


def test_places_match_photos(manifest):
    ds = make("test")
    place_of = torch.tensor([manifest["photos"][p]["label"] for p in ds.photo_names])
    assert torch.equal(place_of[ds.photo_ids], ds.places)
    label_of = torch.tensor([manifest["birds"][b]["label"] for b in ds.bird_names])
    assert torch.equal(label_of[ds.bird_ids], ds.labels)


def test_heldout_photos(manifest):
    train = make("train", correlation=0.9)
    train_photos = {train.photo_names[i] for i in train.photo_ids.tolist()}
    assert all(manifest["photos"][p]["split"] == "train" for p in train_photos)
    seen = {}
    for split in ("val", "test"):
        ds = make(split)
        used = {ds.photo_names[i] for i in ds.photo_ids.tolist()}
        assert used.isdisjoint(train_photos)
        assert all(manifest["photos"][p]["split"] == split for p in used)
        seen[split] = used
    assert seen["val"].isdisjoint(seen["test"])
    # "crop" setting: every split crops from the train photos, and train itself does not change
    crop_test = make("test", background_holdout="crop")
    assert {crop_test.photo_names[i] for i in crop_test.photo_ids.tolist()} <= set(
        k for k, v in manifest["photos"].items() if v.get("split") == "train")
    assert torch.equal(make("train", correlation=0.9, background_holdout="crop").images, train.images)


def test_holdout_birds(manifest):
    train = make("train", holdout_birds=True)
    test = make("test", holdout_birds=True)
    train_birds = {train.bird_names[i] for i in train.bird_ids.tolist()}
    test_birds = {test.bird_names[i] for i in test.bird_ids.tolist()}
    assert train_birds.isdisjoint(test_birds)
    assert all(manifest["birds"][b]["split"] == "train" for b in train_birds)
    assert all(manifest["birds"][b]["split"] == "test" for b in test_birds)


def test_alpha_and_composite_identity():
    ds = make("test", image_size=64)
    assert ds.alpha.min() >= 0 and ds.alpha.max() <= 1
    assert (ds.alpha.flatten(1).amax(1) == 1).all()  # every image has an opaque bird
    expected = ds.alpha * ds.foregrounds.float() + (1 - ds.alpha) * ds.true_backgrounds.float()
    assert (expected - ds.images.float()).abs().max() <= 0.5 + 1e-3
    outside = ds.alpha.expand_as(ds.images) == 0
    assert torch.equal(ds.images[outside], ds.true_backgrounds[outside])
    assert torch.equal(blend_uint8(ds.foregrounds, ds.alpha, ds.true_backgrounds), ds.images)


def test_transforms_and_as_tensor():
    ds = make("val", transform=lambda im: np.asarray(im).mean(), target_transform=lambda y: y + 10)
    x, y = ds[1]
    assert isinstance(x, np.floating) and y == int(ds.labels[1]) + 10
    ds = make("val", as_tensor=True)
    x, y = ds[2]
    assert torch.equal(x, ds.images[2])
    loader = torch.utils.data.DataLoader(ds, batch_size=8)
    xb, yb = next(iter(loader))
    assert xb.shape == (8, 3, 64, 64) and torch.equal(yb, ds.labels[:8])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "dev"}, "split.*'dev'"),
        ({"image_size": 0}, "image_size.*0"),
        ({"image_size": 64.0}, "image_size.*64.0"),
        ({"correlation": 1.5}, "correlation.*1.5"),
        ({"n": -3}, "n must.*-3"),
        ({"seed": "a"}, "seed.*'a'"),
        ({"background_holdout": "pixel"}, "background_holdout.*'pixel'"),
        ({"holdout_birds": "yes"}, "holdout_birds.*'yes'"),
        ({"transform": 3}, "transform.*3"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StampBirds(**kwargs)


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        StampBirds(root=tmp_path)


def test_composite_stamps_generic(tmp_path):
    rgba = np.zeros((30, 20, 4), dtype=np.uint8)
    rgba[5:25, 4:16] = (200, 30, 30, 255)
    rgba[5:25, 3] = (200, 30, 30, 128)
    path = tmp_path / "stamp.png"
    Image.fromarray(rgba, "RGBA").save(path)
    stamp = load_stamp_rgba(path, max_side=16)
    assert stamp.shape[2] == 4 and max(stamp.shape[:2]) <= 16 and stamp[..., 3].any()
    photo = torch.randint(0, 256, (3, 90, 120), dtype=torch.uint8)
    stamps = [stamp, torch.from_numpy(rgba).permute(2, 0, 1)]
    photos = [photo, Image.new("RGB", (80, 60))]
    images, alpha = composite_stamps(stamps, photos, n=10, image_size=32, seed=1)
    assert images.shape == (10, 3, 32, 32) and images.dtype == torch.uint8
    assert alpha.shape == (10, 1, 32, 32) and alpha.dtype == torch.float32
    again, _ = composite_stamps(stamps, photos, n=10, image_size=32, seed=1)
    assert torch.equal(images, again)
    with pytest.raises(ValueError, match="n must.*0"):
        composite_stamps([stamp], [photo], n=0)
    with pytest.raises(ValueError, match="stamp_scale"):
        composite_stamps([stamp], [photo], n=2, stamp_scale=(0.5, 1.5))


# --- pack versions --------------------------------------------------------------------------------------------

# sha256 of v1 composites (recipe in _composite_digest), computed with the v1 code and pack before version 2
# existed (commit 6695b83): version=1 must keep reproducing the old figures exactly.
V1_DIGEST = "be8fc18285d7098896e57c13cfe26a62c7691923a13157ef548b1aa092dbbe85"


def _composite_digest(**kwargs) -> str:
    h = hashlib.sha256()
    for split, n in (("train", 64), ("val", 32), ("test", 32)):
        for holdout in ("photo", "crop"):
            ds = StampBirds(split=split, n=n, image_size=32, background_holdout=holdout, **kwargs)
            for t in (ds.images, ds.alpha, ds.labels, ds.places, ds.photo_ids, ds.bird_ids):
                h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def test_version1_composites_unchanged():
    assert _composite_digest(version=1) == V1_DIGEST
    assert _composite_digest(root=default_root(1)) == V1_DIGEST


def test_version2_is_default_and_keeps_the_train_split():
    v2, v1 = make("train", image_size=32), make("train", image_size=32, version=1)
    assert v2.version == 2 and v1.version == 1 and v2.root == default_root(2)
    assert torch.equal(v2.images, v1.images) and torch.equal(v2.alpha, v1.alpha)
    assert torch.equal(v2.photo_ids, v1.photo_ids) and torch.equal(v2.bird_ids, v1.bird_ids)
    assert not torch.equal(make("test", image_size=32).images, make("test", image_size=32, version=1).images)


def _segmenter_training_sources() -> list[str]:
    """EXTRA_TRAIN_PHOTOS of weights/train_default_segmenter.py, read without importing the script."""
    path = Path(__file__).resolve().parents[1] / "weights" / "train_default_segmenter.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "EXTRA_TRAIN_PHOTOS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("EXTRA_TRAIN_PHOTOS not found")


def test_version2_heldout_photos():
    m = json.loads((default_root(2) / "manifest.json").read_text(encoding="utf-8"))
    kept = {k: v for k, v in m["photos"].items() if not v.get("dropped")}
    for split in ("val", "test"):
        for place in ("water", "land"):
            assert len([v for v in kept.values() if v["split"] == split and v["place"] == place]) >= 3, (split, place)
    # no val/test photo is a train photo or one the bundled segmenter was trained on
    train_sources = {v["source"] for v in kept.values() if v["split"] == "train"}
    segmenter = _segmenter_training_sources()
    for name, v in kept.items():
        if v["split"] == "train":
            continue
        assert v["source"] not in train_sources, name
        for spec in segmenter:
            if spec.startswith("wallpaper:"):
                assert f"/wallpapers/{spec.split(':', 1)[1]}/" not in v["source"], (name, spec)
            else:
                assert v["source"] != spec, (name, spec)
    # halves of one photograph: same source, disjoint regions, one in val and one in test
    halves: dict[str, list] = {}
    for v in kept.values():
        if "photograph" in v:
            halves.setdefault(v["photograph"], []).append(v)
    assert halves
    for pair in halves.values():
        assert sorted(h["split"] for h in pair) == ["test", "val"]
        (a, b) = sorted(pair, key=lambda h: h["region"][0])
        assert a["region"][2] <= b["region"][0]
    # every candidate looked at has a reason
    assert all(reason for pkg in m["candidates_reviewed"].values() for reason in pkg.values())
    assert "CC-BY-SA-3.0" in (default_root(2) / "NOTICE").read_text(encoding="utf-8")


def test_version2_uses_heldout_photos_equally():
    ds = make("test", image_size=16, n=200)
    counts = torch.bincount(ds.photo_ids, minlength=len(ds.photo_names))
    for place in (0, 1):
        used = counts[[i for i, n in enumerate(ds.photo_names) if ds.manifest["photos"][n]["label"] == place
                       and ds.manifest["photos"][n]["split"] == "test"]]
        assert (used > 0).all() and int(used.max() - used.min()) <= 1
    assert ds.manifest["default_n"]["test"] == 2400


def test_version_arguments():
    with pytest.raises(ValueError, match="version.*3"):
        StampBirds(version=3)
    with pytest.raises(ValueError, match="version.*True"):
        default_root(True)
    with pytest.raises(ValueError, match="version=2.*version 1"):
        StampBirds(root=default_root(1), version=2, n=8, image_size=16)


def test_benchmark_interval_and_per_photo_accuracy():
    from benchmarks.robustness import per_photo_accuracy, t_interval

    mean, half = t_interval([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6) and half == pytest.approx(4.303 * 0.1 / 3**0.5, rel=1e-3)
    ds = make("test", image_size=16, n=40)
    preds = ds.labels.clone()
    wrong = ds.photo_ids == ds.photo_ids[0]
    preds[wrong] = 1 - preds[wrong]
    acc = per_photo_accuracy(preds, ds)
    assert acc[ds.photo_names[int(ds.photo_ids[0])]]["accuracy"] == 0.0
    assert sum(v["n"] for v in acc.values()) == len(ds)
    assert all(v["accuracy"] == 1.0 for k, v in acc.items() if k != ds.photo_names[int(ds.photo_ids[0])])


def test_benchmark_t_quantile_beyond_twenty_seeds():
    """25 seeds take t_{0.975,24} = 2.064, not the normal 1.96 (intervals were 5 % too narrow past 21 seeds)."""
    from benchmarks._common import mean_ci, t975

    # published table values (3 decimals): one quantile for the benchmarks and background_gap
    for df, table in ((1, 12.706), (4, 2.776), (9, 2.262), (24, 2.064), (30, 2.042), (60, 2.000), (120, 1.980)):
        assert t975(df) == pytest.approx(table, abs=5e-4)
    assert 2.000 < t975(50) < 2.021 and 1.962 < t975(1000) < 1.963  # between the table's entries, monotone
    assert all(t975(df) > t975(df + 1) for df in [*range(1, 300), *range(995, 1006)])  # no jump at the switch
    values = [0.1 * (k % 5) for k in range(25)]
    mean, half = mean_ci(values)
    sd = (sum((v - mean) ** 2 for v in values) / 24) ** 0.5
    assert half == pytest.approx(2.064 * sd / 5, rel=2e-4)
    with pytest.raises(ValueError, match="df"):
        t975(0)


def test_benchmark_paired_difference_and_refined_probability():
    from benchmarks.robustness import Runner, refined_probability
    from torch_backswap.segmenter import PatchSegmenter

    runner = Runner.__new__(Runner)  # only the cached records matter for paired_difference
    runner.records = {"a/seed0": {"worst_group": 0.5}, "a/seed2": {"worst_group": 0.7}, "a/seed3": {"worst_group": 0.1},
                      "b/seed0": {"worst_group": 0.4}, "b/seed2": {"worst_group": 0.9}}
    assert runner.paired_difference("a", "b") == pytest.approx([0.1, -0.2])  # seed3 has no baseline run
    assert runner.paired_difference("b", "c") == []

    ds = make("test", image_size=32, n=4)
    seg = PatchSegmenter(grid_size=8, input_size=64, width=8)
    prob = refined_probability(seg, ds.images, batch_size=3)  # two batches
    assert prob.shape == (4, 1, 32, 32) and prob.dtype == torch.float32
    assert float(prob.min()) >= 0.0 and float(prob.max()) <= 1.0


def test_benchmark_joint_run_equals_single_setting_runs(tmp_path):
    """``--holdout crop photo`` trains once; each setting's record equals a run in that setting alone (ERM, and the
    learned-mask routes, whose fine-tuned segmenter and train masks the settings share)."""
    from benchmarks.robustness import main

    methods = ("erm", "backswap", "backswap_refined", "backswap_edge", "gt_trim")
    common = ["--image-size", "16", "--n-train", "48", "--n-test", "64", "--epochs", "2", "--n-labeled", "20",
              "--finetune-epochs", "1", "--methods", *methods, "--seeds", "0"]
    main([*common, "--holdout", "crop", "photo", "--out-dir", str(tmp_path / "joint")])
    for holdout in ("crop", "photo"):
        main([*common, "--holdout", holdout, "--out-dir", str(tmp_path / holdout)])
        name = f"results/robustness_16px_corr1.0_{holdout}_v2.json"
        joint_file = json.loads((tmp_path / "joint" / name).read_text())
        alone_file = json.loads((tmp_path / holdout / name).read_text())
        for method in methods:
            joint, alone = joint_file[f"{method}/seed0"], alone_file[f"{method}/seed0"]
            assert joint.pop("trained_with", None) == ("16px_corr1.0_crop_v2" if holdout == "photo" else None)
            for record in (joint, alone):
                del record["seconds"], record["code"]
                record.pop("bank_seconds", None)  # wall-clock time
            assert joint == alone, method
            assert 0.0 <= joint["worst_group"] <= joint["average"] <= 1.0
        assert "refined_test" in joint_file["backswap_refined/seed0"]["segmenter"]
        assert joint_file["backswap_edge/seed0"]["segmenter"]["edge_test"]["tight_threshold"] == 0.5


def test_benchmark_edge_probes_change_only_the_edge_of_the_true_alpha():
    """``gt_soft`` blurs the true alpha (same object, soft edge); ``gt_rim`` grows it by r px with a hard edge."""
    from benchmarks.robustness import edge_probe_cut

    alpha = torch.zeros(2, 1, 16, 16)
    alpha[0, :, 5:11, 5:11] = 1.0
    alpha[1, :, 8, 3:13] = 1.0  # a one-pixel "leg"
    soft = edge_probe_cut("gt_soft", alpha, 1)
    assert soft.shape == alpha.shape and soft.dtype == torch.float32
    assert float(soft.min()) >= 0.0 and float(soft.max()) <= 1.0
    assert torch.allclose(soft.sum((1, 2, 3)), alpha.sum((1, 2, 3)), rtol=1e-4)  # blur keeps the mass (replicate border, object inside)
    assert 0.0 < float(soft[0, 0, 5, 4]) < 0.5 < float(soft[0, 0, 7, 7]) < 1.0 + 1e-6
    rim = edge_probe_cut("gt_rim", alpha, 1)
    assert set(rim.unique().tolist()) == {0.0, 1.0}
    assert bool((rim >= alpha).all()) and int(rim[0].sum()) == 8 * 8 and int(rim[1].sum()) == 3 * 12
    with pytest.raises(ValueError, match="gt_blur"):
        edge_probe_cut("gt_blur", alpha, 1)
