"""Spawrious loader on a reduced copy of the real ``spawrious224`` layout (8 images per folder, not 3168)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks.paper_fixtures import write_spawrious
from torch_backswap.alpha import ObjectAlpha
from torch_backswap.datasets import DatasetFileError, Spawrious
from torch_backswap.datasets.spawrious import BENCHMARKS, CLASSES, LOCATIONS, spawrious_combinations

TOTAL = 8


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("spaw")
    write_spawrious(root, total=TOTAL, masks=True)
    return root


def test_o2o_easy_follows_the_original_combinations(root):
    # o2o_easy (aengusl/spawrious): bulldog desert, dachshund jungle, labrador dirt, corgi snow; filler beach;
    # test: bulldog dirt, dachshund snow, labrador desert, corgi jungle
    train = Spawrious(root, "o2o_easy", "train", total=TOTAL, val_fraction=0)
    n0, n1 = int(0.97 * TOTAL), int(0.87 * TOTAL)
    env_counts = torch.bincount(train.envs).tolist()
    assert env_counts == [TOTAL * 4, TOTAL * 4]  # each environment: 4 classes x (own bg + filler) = total each
    expected_train = {("bulldog", "desert"), ("dachshund", "jungle"), ("labrador", "dirt"), ("corgi", "snow")}
    for cls, loc in expected_train:
        g = CLASSES.index(cls) * len(LOCATIONS) + LOCATIONS.index(loc)
        assert int((train.groups == g).sum()) == n0 + n1
        filler = CLASSES.index(cls) * len(LOCATIONS) + LOCATIONS.index("beach")
        assert int((train.groups == filler).sum()) == (TOTAL - n0) + (TOTAL - n1)
    test = Spawrious(root, "o2o_easy", "test", total=TOTAL)
    got = {(CLASSES[y], LOCATIONS[loc]) for y, loc in zip(test.targets, test.locations.tolist())}
    assert got == {("bulldog", "dirt"), ("dachshund", "snow"), ("labrador", "desert"), ("corgi", "jungle")}
    assert len(test) == 2 * 4 * TOTAL  # every image of folders 0 and 1


def test_file_names_say_the_label_and_location(root):
    for benchmark in ("o2o_hard", "m2m_medium"):
        ds = Spawrious(root, benchmark, "train", total=TOTAL)
        for rel, y, loc in zip(ds.ids, ds.targets, ds.locations.tolist()):
            folder, location, cls, name = rel.split("/")
            assert name.startswith(f"{location}_{cls}_") and name.endswith(".png")
            assert (CLASSES[y], LOCATIONS[loc]) == (cls, location)


def test_m2m_uses_folder_0_and_two_backgrounds_per_class(root):
    ds = Spawrious(root, "m2m_hard", "train", total=TOTAL, val_fraction=0)
    assert set(ds.envs.tolist()) == {0}
    for y in range(4):
        locations = set(ds.locations[ds.labels == y].tolist())
        assert len(locations) == 2
    test = Spawrious(root, "m2m_hard", "test", total=TOTAL)
    for y in range(4):  # test backgrounds never seen with that class in training
        train_locs = set(ds.locations[ds.labels == y].tolist())
        assert not train_locs & set(test.locations[test.labels == y].tolist())


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_train_and_val_are_disjoint_and_cover_the_selection(root, benchmark):
    train = Spawrious(root, benchmark, "train", total=TOTAL, val_fraction=0.25)
    val = Spawrious(root, benchmark, "val", total=TOTAL, val_fraction=0.25)
    full = Spawrious(root, benchmark, "train", total=TOTAL, val_fraction=0)
    assert not set(train.ids) & set(val.ids)
    assert sorted(train.ids + val.ids) == sorted(full.ids)
    plan = spawrious_combinations(benchmark, TOTAL)["train"]
    assert len(full) == sum(limit for *_, limit in plan)


def test_masks_as_object_alpha_and_patch_labels(root):
    ds = Spawrious(root, "o2o_medium", "test", total=TOTAL, masks=root / "spawrious_masks", return_masks=True)
    sample = ds[5]
    assert isinstance(sample["alpha"], ObjectAlpha) and sample["alpha"].shape == (1, 32, 32)
    image, alpha = sample["image"].float(), sample["alpha"][0] > 0.5
    assert (image[:, alpha].mean(1) - image[:, ~alpha].mean(1)).abs().sum() > 60
    labels = ds.patch_labels([0, 1, 2], grid_size=8)
    assert ds.patch_threshold == 0.2 and labels.ids == ds.ids[:3]
    with pytest.raises(ValueError, match="masks="):
        Spawrious(root, "o2o_medium", "test", total=TOTAL, return_masks=True)


def test_short_or_missing_folders_name_the_folder(tmp_path):
    write_spawrious(tmp_path, total=4, locations=("desert", "jungle", "dirt", "snow", "beach"))
    # default total (3168) with 4 images per folder: the loader refuses a short dataset
    with pytest.raises(DatasetFileError, match="has 4 images but o2o_easy takes 3072"):
        Spawrious(tmp_path, "o2o_easy")
    with pytest.raises(DatasetFileError) as err:  # mountain was never written
        Spawrious(tmp_path, "o2o_medium", total=4)
    assert "mountain" in err.value.path
    with pytest.raises(DatasetFileError, match="download=True"):
        Spawrious(tmp_path / "nothing")
    with pytest.raises(ValueError, match="benchmark must be one of"):
        Spawrious(tmp_path, "o2o_impossible")
