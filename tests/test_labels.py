from pathlib import Path

import pytest
import torch

from torch_backswap.labels import (
    LabelFormatError,
    MissingImageError,
    PatchLabels,
    dense_to_patch_grid,
    patch_grid_to_dense,
)

DATA = Path(__file__).parent / "data"
EXCERPT = DATA / "paper_masks_excerpt.csv"
FULL = Path(__file__).resolve().parents[2] / "shared" / "data" / "paper_waterbirds_patch_labels.csv"


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def _bits(s, ones=()):
    return "".join("1" if i in ones else "0" for i in range(s * s))


# -- reading ---------------------------------------------------------------------------------------------


def test_read_paper_excerpt():
    labels = PatchLabels.read(EXCERPT)
    assert len(labels) == 5
    assert labels.grid_size == 16
    assert labels.grids.dtype == torch.bool and labels.grids.shape == (5, 16, 16)
    assert labels.ids[0] == "7881"
    assert "7881" in labels and "nope" not in labels
    assert labels.line_of("11535") == 3
    # first row: a '1' at flat position 56 -> row 3, col 8
    first = EXCERPT.read_text().splitlines()[1].split(",")[1]
    assert labels["7881"].reshape(-1).tolist() == [c == "1" for c in first]


@pytest.mark.skipif(not FULL.is_file(), reason="shared fixture not present")
def test_read_full_paper_file():
    labels = PatchLabels.read(FULL)
    assert len(labels) == 287 and labels.grid_size == 16
    assert labels.grids.flatten(1).any(1).all()


@pytest.mark.parametrize("fmt,suffix", [("backswap", ".csv"), ("paper", ".csv"), ("json", ".json")])
def test_write_read_roundtrip(tmp_path, fmt, suffix):
    labels = PatchLabels.read(EXCERPT)
    path = labels.write(tmp_path / f"out{suffix}", format=fmt)
    again = PatchLabels.read(path)
    assert again == labels
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temporary file


def test_backswap_csv_header_and_json_autodetect(tmp_path):
    labels = PatchLabels(["a.png", "sub/b.jpg"], torch.eye(4, dtype=torch.bool).repeat(2, 1, 1))
    csv_path = labels.write(tmp_path / "l.csv")
    assert csv_path.read_text().splitlines()[0] == "image,grid_size,mask"
    json_path = labels.write(tmp_path / "l.json")  # backswap + .json -> JSON
    assert json_path.read_text().lstrip().startswith("{")
    assert PatchLabels.read(json_path) == labels


@pytest.mark.parametrize(
    "text,line,fragment",
    [
        ("info,mask\na,0000\nb,00000\n", 3, "not a square"),
        ("info,mask\na,0000\nb,000000000\n", 3, "earlier rows"),
        ("info,mask\na,0000\nb,00x0\n", 3, "'0' and '1'"),
        ("info,mask\na,0000\na,0001\n", 3, "duplicate"),
        ("info,mask\n,0000\n", 2, "empty image id"),
        ("image,grid_size,mask\na,3,0000\n", 2, "grid_size**2"),
        ("image,grid_size,mask\na,two,0000\n", 2, "not an integer"),
        ("name,bits\na,0000\n", 1, "header"),
        ("info,mask\n", 2, "no label rows"),
    ],
)
def test_csv_errors_name_file_line_value(tmp_path, text, line, fragment):
    path = _write(tmp_path, "bad.csv", text)
    with pytest.raises(LabelFormatError) as info:
        PatchLabels.read(path)
    message = str(info.value)
    assert f"{path}:{line}:" in message
    assert fragment in message
    assert info.value.line == line


def test_json_errors(tmp_path):
    good = PatchLabels(["x", "y"], torch.zeros(2, 2, 2, dtype=torch.bool))
    text = good.to_text("json").replace('"mask": "0000"}\n', '"mask": "0021"}\n')
    path = _write(tmp_path, "bad.json", text)
    with pytest.raises(LabelFormatError, match=r"bad\.json:\d+: .*'0' and '1'.*0021"):
        PatchLabels.read(path)
    dup = good.to_text("json").replace('"image": "y"', '"image": "x"')
    with pytest.raises(LabelFormatError, match="duplicate"):
        PatchLabels.read(_write(tmp_path, "dup.json", dup))
    with pytest.raises(LabelFormatError, match="invalid JSON"):
        PatchLabels.read(_write(tmp_path, "broken.json", "{"))


def test_missing_images(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "7881.png").write_bytes(b"x")
    labels = PatchLabels.read(EXCERPT)
    with pytest.raises(MissingImageError) as info:
        labels.validate_images(tmp_path / "img")
    message = str(info.value)
    assert "paper_masks_excerpt.csv:3" in message and "'11535'" in message and "4 labelled image(s)" in message
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, LabelFormatError)
    assert labels.subset(["7881"]).image_paths(tmp_path / "img") == [tmp_path / "img" / "7881.png"]


# -- the value type ---------------------------------------------------------------------------------------


def test_container_subset_merge_update():
    labels = PatchLabels.read(EXCERPT)
    sub = labels.subset(["182", "7881"])
    assert sub.ids == ["182", "7881"] and torch.equal(sub["182"], labels["182"])
    with pytest.raises(KeyError):
        labels.subset(["missing"])
    with pytest.raises(KeyError, match="missing"):
        labels["missing"]
    changed = PatchLabels(["182", "new"], torch.ones(2, 16, 16, dtype=torch.bool))
    merged = labels.merge(changed)
    assert len(merged) == 6 and merged["182"].all() and merged.ids[-1] == "new"
    assert not labels["182"].all()  # merge does not mutate
    labels.update(changed)
    assert labels == merged
    assert dict(labels.items()).keys() == set(merged.ids)
    with pytest.raises(ValueError, match="grid_size"):
        labels.merge(PatchLabels(["z"], torch.zeros(1, 4, 4, dtype=torch.bool)))
    with pytest.raises(LabelFormatError, match="duplicate"):
        PatchLabels(["a", "a"], torch.zeros(2, 2, 2, dtype=torch.bool))


# -- dense <-> grid ---------------------------------------------------------------------------------------


def test_dense_to_patch_grid_thresholds():
    mask = torch.zeros(1, 8, 8)
    mask[0, 0:4, 0:4] = 1  # cell (0,0) fully covered
    mask[0, 0:1, 4:8] = 1  # cell (0,1) covered 1/4
    mask[0, 4:5, 0:2] = 1  # cell (1,0) covered 1/8
    grid = dense_to_patch_grid(mask, 2, threshold=0.25)
    assert grid.tolist() == [[[True, True], [False, False]]]
    assert dense_to_patch_grid(mask, 2, threshold=0.26).tolist() == [[[True, False], [False, False]]]
    assert dense_to_patch_grid(mask, 2, threshold=0.125)[0, 1, 0]
    # (B,1,H,W), uint8 0/255 and bool agree; H, W need not divide by S
    as_u8 = (mask[:, None] * 255).to(torch.uint8)
    assert torch.equal(dense_to_patch_grid(as_u8, 2), grid)
    assert torch.equal(dense_to_patch_grid(mask.bool(), 2), grid)
    assert dense_to_patch_grid(torch.ones(2, 37, 23), 5).all()
    with pytest.raises(ValueError, match="grid_size"):
        dense_to_patch_grid(mask, 0)
    with pytest.raises(ValueError, match="threshold"):
        dense_to_patch_grid(mask, 2, threshold=0)


def test_grid_to_dense_and_from_dense_masks():
    grids = torch.zeros(2, 4, 4, dtype=torch.bool)
    grids[0, 1, 2] = True
    dense = patch_grid_to_dense(grids, (8, 8))
    assert dense.shape == (2, 1, 8, 8) and dense.dtype == torch.float32
    assert dense[0, 0, 2:4, 4:6].eq(1).all() and dense.sum() == 4
    labels = PatchLabels.from_dense_masks(dense[:, 0], ["a", "b"], 4)
    assert labels.ids == ["a"] and torch.equal(labels["a"], grids[0])  # empty "b" dropped
    kept = PatchLabels.from_dense_masks(dense, ["a", "b"], 4, drop_empty=False)
    assert kept.ids == ["a", "b"]
