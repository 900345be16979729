"""Property-based fuzzing of the patch-label parsers (our CSV, the paper's masks.csv, our JSON).

Every file content, however broken, gives either a well-formed :class:`PatchLabels` or a
:class:`LabelFormatError` / :class:`BackswapFileError` whose message names the file: never another exception.
Writing and reading back random labels gives the same labels.
"""

import atexit
import json
import shutil
import string
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torch_backswap._io import BackswapFileError
from torch_backswap.labels import LabelFormatError, PatchLabels

FORMATS = {"backswap": ".csv", "paper": ".csv", "json": ".json"}
# examples per test: enough to hit every branch of the parsers, small enough for a few seconds per test
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ROUND_TRIP = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

_WORK = Path(tempfile.mkdtemp(prefix="backswap-fuzz-"))
atexit.register(shutil.rmtree, _WORK, True)

# image ids: anything a label file can keep (non-empty, one line, no NUL, no surrounding whitespace),
# including commas, quotes, braces and non-ASCII so that CSV quoting and JSON escaping are exercised
_ID_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00")
image_ids = st.text(_ID_CHARS, min_size=1, max_size=12).filter(lambda s: s == s.strip())


@st.composite
def patch_labels(draw, min_size: int = 1) -> PatchLabels:
    """Random labels: 1..6 cells per side, ``min_size``..6 images with unique ids, random grids."""
    size = draw(st.integers(1, 6))
    ids = draw(st.lists(image_ids, min_size=min_size, max_size=6, unique=True))
    bits = draw(st.lists(st.booleans(), min_size=len(ids) * size * size, max_size=len(ids) * size * size))
    return PatchLabels(ids, torch.tensor(bits, dtype=torch.bool).view(len(ids), size, size))


def _file(content: bytes, suffix: str) -> Path:
    handle = tempfile.NamedTemporaryFile(dir=_WORK, suffix=suffix, delete=False)
    with handle:
        handle.write(content)
    return Path(handle.name)


def _read_or_error(content: bytes, suffix: str, format: str = "auto"):
    """The parse outcome, checked: well-formed labels, or a file error naming the file. Anything else fails."""
    path = _file(content, suffix)
    try:
        labels = PatchLabels.read(path, format=format)
    except (LabelFormatError, BackswapFileError) as err:
        assert str(path) in str(err), f"the error does not name the file: {err}"
        return err
    finally:
        path.unlink()
    assert labels.grids.dtype == torch.bool and labels.grids.ndim == 3
    assert labels.grids.shape == (len(labels.ids), labels.grid_size, labels.grid_size)
    assert len(set(labels.ids)) == len(labels.ids) and all(i and i == i.strip() for i in labels.ids)
    assert labels.lines is not None and len(labels.lines) == len(labels.ids)
    # what was read can be written and read back unchanged
    if len(labels):
        again = _file(labels.to_text("backswap").encode(), ".csv")
        assert PatchLabels.read(again) == labels
        again.unlink()
    return labels


@pytest.mark.parametrize("format", list(FORMATS))
@ROUND_TRIP
@given(labels=patch_labels())
def test_round_trip_is_identity(format, labels):
    path = labels.write(_WORK / f"round-trip{FORMATS[format]}", format=format)
    again = PatchLabels.read(path)
    assert again == labels
    assert again.source == str(path)
    if format != "json":  # one row per line after the header
        assert again.lines == list(range(2, len(labels) + 2))


@ROUND_TRIP
@given(labels=patch_labels(min_size=0))
def test_json_round_trip_keeps_empty_labels(labels):
    path = labels.write(_WORK / "round-trip-any.json")
    again = PatchLabels.read(path)
    assert again == labels and again.grid_size == labels.grid_size


def _mutations(data: st.DataObject, content: bytes) -> bytes:
    """Truncate, flip bits, delete or insert bytes, or splice random bytes into ``content``."""
    kind = data.draw(st.sampled_from(["truncate", "flip", "delete", "insert", "splice"]), label="mutation")
    if kind == "truncate":
        return content[: data.draw(st.integers(0, len(content)), label="cut at")]
    if kind == "flip":
        out = bytearray(content)
        for _ in range(data.draw(st.integers(1, 4), label="flips")):
            at = data.draw(st.integers(0, len(out) - 1), label="flip at")
            out[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        return bytes(out)
    start = data.draw(st.integers(0, len(content)), label="at")
    if kind == "delete":
        return content[:start] + content[start + data.draw(st.integers(1, 8), label="length"):]
    piece = data.draw(st.sampled_from([b",", b'"', b"\n", b"\r", b"0", b"1", b"{", b"}", b"[", b"]", b":", b"\x00",
                                       b"\xff", b'"image"', b'"mask"', b"-1", b"1e9", b"\xef\xbb\xbf"]),
                      label="piece") if kind == "insert" else data.draw(st.binary(min_size=1, max_size=16),
                                                                         label="random bytes")
    return content[:start] + piece + content[start:]


@pytest.mark.parametrize("format", list(FORMATS))
@FUZZ
@given(labels=patch_labels(), data=st.data())
def test_mutated_files_parse_or_raise_a_file_error(format, labels, data):
    content = labels.to_text(format).encode()
    mutated = _mutations(data, content)
    outcome = _read_or_error(mutated, FORMATS[format])
    if mutated == content:
        assert outcome == labels


@pytest.mark.parametrize("format", ["backswap", "json"])
@FUZZ
@given(labels=patch_labels(), data=st.data())
def test_truncated_files_never_give_a_wrong_label(format, labels, data):
    """Cut anywhere, our formats (which carry the grid size) give a prefix of the labels or an error."""
    content = labels.to_text(format).encode()
    outcome = _read_or_error(content[: data.draw(st.integers(0, len(content)))], FORMATS[format])
    if isinstance(outcome, PatchLabels):
        assert outcome.ids == labels.ids[: len(outcome)]
        assert torch.equal(outcome.grids, labels.grids[: len(outcome)])


@pytest.mark.parametrize("suffix", [".csv", ".json"])
@FUZZ
@given(content=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_arbitrary_bytes_parse_or_raise_a_file_error(suffix, content):
    _read_or_error(content, suffix)


@FUZZ
@given(header=st.sampled_from(["info,mask\n", "image,grid_size,mask\n"]),
       rows=st.lists(st.lists(st.text(string.digits + "01,x\" ", max_size=10), min_size=1, max_size=4), max_size=5))
def test_csv_rows_of_random_cells_parse_or_raise(header, rows):
    _read_or_error((header + "".join(",".join(r) + "\n" for r in rows)).encode(), ".csv")


_json_scalars = (st.none() | st.booleans() | st.integers(-3, 40) | st.floats(allow_nan=False)
                 | st.text(alphabet="01x a", max_size=9))
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["image", "mask", "x"]), inner,
                                                                 max_size=3),
    max_leaves=8,
)


@FUZZ
@given(document=st.fixed_dictionaries(
    {}, optional={"format": st.sampled_from(["backswap-patch-labels", "other"]) | _json_values,
                  "version": st.sampled_from([1, 2]) | _json_values,
                  "grid_size": st.integers(1, 3) | _json_values,
                  "labels": st.lists(st.fixed_dictionaries({}, optional={"image": st.text(max_size=4) | _json_values,
                                                                         "mask": st.text("01", max_size=9)
                                                                         | _json_values}),
                                     max_size=4) | _json_values}),
       indent=st.sampled_from([None, 1, 2]))
def test_json_documents_of_random_values_parse_or_raise(document, indent):
    outcome = _read_or_error(json.dumps(document, indent=indent).encode(), ".json")
    if isinstance(outcome, LabelFormatError) and outcome.line is not None:
        assert 1 <= outcome.line <= json.dumps(document, indent=indent).count("\n") + 1
