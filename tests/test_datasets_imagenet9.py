"""ImageNet-9 Backgrounds Challenge loader on a tiny copy of ``bg_challenge/`` (class folders with spaces)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.paper_fixtures import write_imagenet9
from torch_backswap.alpha import ObjectAlpha
from torch_backswap.datasets import DatasetFileError, ImageNet9
from torch_backswap.datasets.imagenet9 import IN9_CLASSES, VARIANTS

PER_CLASS = 2


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("in9")
    write_imagenet9(root, per_class=PER_CLASS)
    return root


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_loads_with_labels_from_the_class_folders(root, variant):
    ds = ImageNet9(root, variant)
    assert len(ds) == 9 * PER_CLASS
    assert torch.bincount(ds.labels).tolist() == [PER_CLASS] * 9
    for rel, y in zip(ds.relative_paths, ds.targets):
        assert rel.split("/")[0] == IN9_CLASSES[y]
    assert "02_wheeled vehicle" in ds.classes and "06_musical instrument" in ds.classes
    image, label = ds[0]
    assert image.mode == "RGB" and label == 0


def test_variants_pair_by_file_name(root):
    assert ImageNet9(root, "mixed_same").relative_paths == ImageNet9(root / "bg_challenge", "mixed_rand").relative_paths


def test_fg_mask_is_object_alpha_aligned_with_the_original(root):
    ds = ImageNet9(root, "original", return_masks=True)
    sample = ds[7]
    assert isinstance(sample["alpha"], ObjectAlpha)
    alpha = sample["alpha"][0] > 0.5
    only_fg = ImageNet9(root, "only_fg", return_masks=True)[7]["image"].float()
    # only_fg zeroes the background: dark exactly outside the mask (JPEG blurs the edge a little)
    assert only_fg[:, ~alpha].mean() < 20 and only_fg[:, alpha].mean() > 60
    labels = ds.patch_labels(grid_size=8)
    assert len(labels) == len(ds)
    with pytest.raises(ValueError, match="fg_mask belongs to"):
        ImageNet9(root, "mixed_rand", return_masks=True)


def test_missing_class_folder_and_mask_are_named(tmp_path):
    base = write_imagenet9(tmp_path, per_class=1, variants=("original",))
    (next((base / "fg_mask" / "val" / "06_musical instrument").glob("*.npy"))).unlink()
    with pytest.raises(DatasetFileError) as err:
        ImageNet9(tmp_path, "original")
    assert "06_musical instrument" in err.value.path and err.value.path.endswith(".npy")
    renamed = base / "original" / "val" / "02_wheeled_vehicle"
    (base / "original" / "val" / "02_wheeled vehicle").rename(renamed)
    with pytest.raises(DatasetFileError, match="02_wheeled vehicle"):
        ImageNet9(tmp_path, "original")
    with pytest.raises(DatasetFileError, match="variant folder missing"):
        ImageNet9(tmp_path, "mixed_rand")
    with pytest.raises(DatasetFileError, match="backgrounds_challenge"):
        ImageNet9(tmp_path / "absent")
