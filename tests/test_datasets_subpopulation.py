"""MetaShift (SubpopBench layout) and the generic ``id, filename, split, y, a`` metadata CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from benchmarks.paper_fixtures import write_metashift
from torch_backswap.datasets import DatasetFileError, MetaShift, SubpopulationCSV


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ms")
    write_metashift(root, per_folder=6)
    return root


def _rows(root: Path) -> list[dict]:
    with open(root / "metashift" / "metadata_metashift.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_metashift_splits_labels_and_attributes_follow_the_csv(root):
    rows = _rows(root)
    total = 0
    for index, split in enumerate(("train", "val", "test")):
        ds = MetaShift(root, split)
        mine = [r for r in rows if int(r["split"]) == index]
        assert len(ds) == len(mine) and ds.targets == [int(r["y"]) for r in mine]
        assert ds.attributes.tolist() == [int(r["a"]) for r in mine]
        assert torch.equal(ds.groups, 2 * ds.labels + ds.attributes)
        total += len(ds)
    assert total == len(rows) == 24
    assert MetaShift(root, "all").classes == ["dog", "cat"]


def test_foreign_absolute_paths_are_rerooted_and_folders_carry_the_truth(root):
    ds = MetaShift(root, "all")
    assert all(str(f).startswith(str(root / "metashift" / "MetaShift-Cat-Dog-indoor-outdoor")) for f in ds.files)
    for f, y, a in zip(ds.files, ds.targets, ds.attributes.tolist()):
        folder = f.parent.name  # e.g. "cat(indoor)"
        assert folder == f"{ds.classes[y]}({ds.attribute_names[a]})"
    image, label = ds[0]
    assert image.mode == "RGB" and label == ds.targets[0]


def test_generic_csv_with_id_and_named_splits(tmp_path):
    (tmp_path / "imgs").mkdir()
    from PIL import Image

    lines = ["id,filename,split,y,a"]
    for i in range(9):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / "imgs" / f"{i}.png")
        lines.append(f"s{i},imgs/{i}.png,{['train', 'val', 'test'][i % 3]},{i % 3},{i % 2}")
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    ds = SubpopulationCSV(tmp_path, split="test")
    assert ds.ids == ["s2", "s5", "s8"] and ds.targets == [2, 2, 2] and ds.attributes.tolist() == [0, 1, 0]
    assert ds.n_groups == 3 * 2 and ds.groups.tolist() == [4, 5, 4]
    assert ds.classes == ["0", "1", "2"]


def test_missing_image_bad_split_and_no_download(tmp_path):
    base = write_metashift(tmp_path, per_folder=2, absolute_paths=False)
    victim = sorted(base.rglob("*.jpg"))[1]
    victim.unlink()
    with pytest.raises(DatasetFileError) as err:
        MetaShift(tmp_path, "all")
    assert err.value.path == str(victim)
    with pytest.raises(ValueError, match="SubpopBench"):
        MetaShift(tmp_path, download=True)
    (base / "metadata_metashift.csv").write_text("filename,y,a,split\nx.jpg,1,0,holdout\n")
    with pytest.raises(DatasetFileError, match="split must be"):
        MetaShift(tmp_path)
    with pytest.raises(DatasetFileError, match="metadata_metashift.csv"):
        MetaShift(tmp_path / "nowhere")
