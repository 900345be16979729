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
FULL = DATA / "paper_waterbirds_patch_labels.csv"  # a copy of ../shared/data (tests/data/README.md)


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


@pytest.mark.parametrize("fmt", ["backswap", "paper", "json"])
def test_the_file_codec_works_on_plain_data(fmt):
    """``label_files`` turns text into (ids, grids, lines) without PatchLabels; PatchLabels writes through it."""
    from torch_backswap import label_files

    labels = PatchLabels.read(EXCERPT)
    text = label_files.format_label_text(labels.ids, labels.grids, fmt)
    assert text == labels.to_text(fmt)
    ids, grids, lines = label_files.parse_label_text(text, "x.json" if fmt == "json" else "x.csv")
    assert ids == labels.ids and torch.equal(grids, labels.grids) and grids.dtype == torch.bool
    assert lines == (list(range(6, 6 + len(ids))) if fmt == "json" else list(range(2, 2 + len(ids))))
    assert label_files.LabelFormatError is LabelFormatError  # one class, re-exported by labels
    with pytest.raises(ValueError, match=r"format must be .*'bogus'"):
        label_files.parse_label_text(text, "x.csv", "bogus")


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


# -- file errors: every one names the file, the real line and the value ----------------------------------


def _doc(labels, indent=None, **top):
    import json

    return json.dumps({"format": "backswap-patch-labels", "version": 1, "grid_size": 2, **top, "labels": labels},
                      indent=indent)


_A, _B, _C = ({"image": "a", "mask": "1001"}, {"image": "b", "mask": "0011"}, {"image": "c", "mask": "1111"})
_OURS = PatchLabels(["a", "b", "c"], torch.tensor([[1, 0, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1]]).bool().view(3, 2, 2))


@pytest.mark.parametrize(
    "text,line,fragment",
    [
        # our writer's layout: header lines 1-5, entry k on line 6 + k (was reported one entry too late)
        (_OURS.to_text("json").replace('"image": "b", ', ""), 7, "label 1 needs 'image' and 'mask'"),
        (_OURS.to_text("json").replace('"0011"', '"0021"'), 7, "label 1: mask may only contain '0' and '1'"),
        (_OURS.to_text("json").replace('"image": "c"', '"image": "a"'), 8, "duplicate image id (first seen on line 6)"),
        # indent=2 with the keys swapped: entry 1 starts on line 10, its mask is on line 11
        (_doc([_A, {"mask": "10x1", "image": "b"}, _C], indent=2), 11, "label 1: mask may only contain"),
        (_doc([_A, {"mask": "1001", "image": 5}, _C], indent=2), 12, "label 1: 'image' must be a non-empty string"),
        (_doc([_A, _B, "c"], indent=2), 14, "label 2 needs 'image' and 'mask'"),
        # everything on one line (was reported as 'entry 2', no line)
        (_doc([_A, _B, {"image": "c", "mask": "11x1"}]), 1, "label 2: mask may only contain"),
        (_doc([_A, {"image": "b", "mask": 11}]), 1, "label 1: 'mask' must be a string"),
        (_doc([_A, {"image": "b", "mask": "001"}]), 1, "label 1: mask has 3 characters"),
        # the header values, each on its own line with indent=1
        (_doc([_A], indent=1, version=2), 3, "format version 2 is newer than this torch-backswap reads (up to 1)"),
        (_doc([_A], indent=1, version="1"), 3, "'version' must be a positive integer"),
        (_doc([_A], indent=1, format="masks"), 2, "not a patch-label file"),
        (_doc([_A], indent=1, grid_size=2.5), 4, "'grid_size' must be a positive integer"),
        (_doc([_A], indent=1, grid_size=True), 4, "'grid_size' must be a positive integer"),
        (_doc([_A], indent=1, grid_size="2"), 4, "'grid_size' must be a positive integer"),
        ('{"grid_size": 2, "labels": {}}', 1, "'labels' must be a JSON array"),
        ('\n\n  {"grid_size": 2}', 3, "missing 'labels'"),
        ('\n["a", "b"]', 2, "expected a JSON object, got a JSON array"),
        ('{"grid_size": 2,\n "labels": [\n', 3, "invalid JSON: Expecting value"),
    ],
)
def test_json_errors_name_the_real_line(tmp_path, text, line, fragment):
    path = _write(tmp_path, "bad.json", text)
    with pytest.raises(LabelFormatError) as info:
        PatchLabels.read(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert fragment in message
    assert info.value.line == line and info.value.path == str(path)


def test_json_lines_of_read_labels_are_real(tmp_path):
    import json

    entries = [{"mask": "1001", "image": "a"}, {"image": "b", "mask": "0011"}]
    path = _write(tmp_path, "l.json", json.dumps({"grid_size": 2, "labels": entries}, indent=2))
    labels = PatchLabels.read(path)  # no 'format'/'version': a hand-written file is read as version 1
    text_lines = path.read_text().splitlines()
    assert [text_lines[labels.line_of(i) - 1].strip() for i in labels] == ['"image": "a"', '"image": "b",']


@pytest.mark.parametrize(
    "content,line,fragment",
    [
        (b"info,mask\na,0000\nb,00\xff0\n", 3, "not UTF-8 text (byte 21 cannot be decoded)"),
        (b"\xef\xbb\xbfinfo,mask\na,0000\n\x89PNG\n", 3, "not UTF-8 text (byte 20 cannot be decoded)"),
        (b'info,mask\na,0000\n"b,0000\nc,0000\n', 3, "unterminated quote: the row runs on to line 4"),
        (b"info,mask\na,0000\nb," + b"0" * 200_000 + b"\n", 3, "malformed CSV: field larger than field limit"),
        (b"image,grid_size,mask\na,2,0000\nb,-1,0\n", 3, "grid_size must be positive"),
        (b"image,grid_size,mask\na,2,0000\nb,\xd9\xa2,0000\n", 3, "grid_size is not an integer"),  # Arabic-Indic 2
    ],
)
def test_csv_errors_for_broken_bytes(tmp_path, content, line, fragment):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(LabelFormatError) as info:
        PatchLabels.read(path)
    assert str(info.value).startswith(f"{path}:{line}: ") and fragment in str(info.value), str(info.value)


def test_label_errors_are_file_errors_with_the_cause_chained(tmp_path):
    import json

    from torch_backswap._io import BackswapFileError, BackswapFileNotFoundError

    with pytest.raises(BackswapFileError) as info:
        PatchLabels.read(_write(tmp_path, "broken.json", '{"labels": ['))
    assert isinstance(info.value, LabelFormatError) and isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, json.JSONDecodeError)
    (tmp_path / "latin1.csv").write_bytes(b"info,mask\n\xe9,0000\n")
    with pytest.raises(LabelFormatError) as info:
        PatchLabels.read(tmp_path / "latin1.csv")
    assert isinstance(info.value.__cause__, UnicodeDecodeError) and info.value.line == 2
    with pytest.raises(BackswapFileNotFoundError, match="missing.csv: patch-label file not found") as info:
        PatchLabels.read(tmp_path / "missing.csv")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(BackswapFileError, match="is a directory"):
        PatchLabels.read(tmp_path)


def test_ids_the_files_cannot_keep_are_refused_and_empty_csv_is_not_written(tmp_path):
    for bad in ["", " a", "a ", "a\nb", "a\rb", "a\x00b"]:
        with pytest.raises(LabelFormatError, match="image id must be non-empty, on one line"):
            PatchLabels([bad], torch.zeros(1, 2, 2, dtype=torch.bool))
    odd = PatchLabels(['a,"b"', "ü/ß.png", "{x}"], torch.ones(3, 2, 2, dtype=torch.bool))
    for fmt, suffix in (("backswap", ".csv"), ("paper", ".csv"), ("json", ".json")):
        assert PatchLabels.read(odd.write(tmp_path / f"odd-{fmt}{suffix}", format=fmt)) == odd
    empty = PatchLabels([], torch.zeros(0, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="cannot write 0 labels as 'backswap' CSV"):
        empty.write(tmp_path / "empty.csv")
    assert not (tmp_path / "empty.csv").exists()
    again = PatchLabels.read(empty.write(tmp_path / "empty.json"))
    assert len(again) == 0 and again.grid_size == 3


def test_a_json_id_with_a_lone_surrogate_is_refused(tmp_path):
    """Found by tests/test_fuzz_labels.py: a cut '\\ud800\\udc00' escape left an id that cannot be written back."""
    path = _write(tmp_path, "l.json", '{"grid_size": 1,\n "labels": [{"image": "a\\ud800", "mask": "1"}]}')
    with pytest.raises(LabelFormatError, match=r"l\.json:2: an image id must be valid Unicode text"):
        PatchLabels.read(path)
