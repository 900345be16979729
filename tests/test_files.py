"""Weights, config and label files: every problem is a file error naming the file; every write is durable.

Durability is checked by recording the system calls: each file is written to a temporary file in the
target's own folder, that file is ``fsync``-ed before ``os.replace`` puts it in place, and the folder is
``fsync``-ed after; a writer that fails half way leaves the old file; concurrent writers never collide.
"""

import json
import os
import pickle
import threading
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import SafetensorError
from safetensors.torch import save as safetensors_bytes

from torch_backswap._io import BackswapFileError, BackswapFileNotFoundError, load_safetensors, read_json_object
from torch_backswap.hub import PretrainedNotFoundError
from torch_backswap.labels import PatchLabels
from torch_backswap.segmenter import PatchSegmenter

TINY = dict(grid_size=4, width=8, input_size=32)


def _tiny(seed: int = 0) -> PatchSegmenter:
    torch.manual_seed(seed)
    return PatchSegmenter(**TINY)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A valid pretrained folder and the bytes of its two files."""
    directory = tmp_path_factory.mktemp("good")
    _tiny().save_pretrained(directory)
    return directory, (directory / "config.json").read_bytes(), (directory / "model.safetensors").read_bytes()


def _copy(saved, root: Path, config: bytes | None = None, weights: bytes | None = None) -> Path:
    directory, good_config, good_weights = saved
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_bytes(good_config if config is None else config)
    (root / "model.safetensors").write_bytes(good_weights if weights is None else weights)
    return root


# -- weights and config: errors that name the file --------------------------------------------------------

_CONFIG = {"backbone": "tiny", "dropout": 0.2, "grid_size": 4, "input_size": 32, "pretrained_backbone": False,
           "width": 8}


def _weights_cases(good: bytes) -> dict:
    other_width = safetensors_bytes(PatchSegmenter(grid_size=4, width=16, input_size=32).state_dict())
    return {
        "empty": (b"", "the file is empty (0 bytes)", SafetensorError),
        "truncated": (good[: len(good) // 2], "incomplete metadata, file not fully covered", SafetensorError),
        "truncated header": (good[:20], "not a readable safetensors file", SafetensorError),
        "pickle": (pickle.dumps({"w": 1}), "not a readable safetensors file", SafetensorError),
        "text": (b"not weights\n" * 20, "not a readable safetensors file", SafetensorError),
        "foreign": (safetensors_bytes({"fc.weight": torch.zeros(2, 2)}),
                    " missing (e.g. 'net.features.0.0.weight'), 1 unexpected (e.g. 'fc.weight')", None),
        "other shapes": (other_width, " of another shape (e.g. 'net.", None),
    }


@pytest.mark.parametrize("case", ["empty", "truncated", "truncated header", "pickle", "text", "foreign",
                                  "other shapes"])
def test_broken_weights_raise_a_file_error_naming_them(saved, tmp_path, case):
    content, fragment, cause = _weights_cases(saved[2])[case]
    directory = _copy(saved, tmp_path / "m", weights=content)
    with pytest.raises(BackswapFileError) as info:
        PatchSegmenter.from_pretrained(directory)
    message = str(info.value)
    assert message.startswith(f"{directory / 'model.safetensors'}: "), message
    assert fragment in message
    if cause is not None:
        assert isinstance(info.value.__cause__, cause)


@pytest.mark.parametrize(
    "content,fragment,cause",
    [
        (b"", "segmenter config is not valid JSON: empty file", json.JSONDecodeError),
        (b"grid_size: 4\n", "segmenter config is not valid JSON: Expecting value (line 1, column 1)",
         json.JSONDecodeError),
        (json.dumps(_CONFIG)[:15].encode(), "segmenter config is not valid JSON: Unterminated string",
         json.JSONDecodeError),
        (b"[4, 8]", "segmenter config must be a JSON object, got a JSON array", None),
        (b'{"grid_size": 4, "backbone": "\xff"}', "segmenter config is not UTF-8 text (byte 30 is b'\\xff')",
         UnicodeDecodeError),
        (json.dumps({**_CONFIG, "grid_size": "4"}).encode(), "invalid segmenter config: grid_size must be a positive "
                                                             "int, got '4'", ValueError),
        (json.dumps({**_CONFIG, "dropout": None}).encode(), "invalid segmenter config: float() argument", TypeError),
        (json.dumps({**_CONFIG, "backbone": "vgg99"}).encode(), "invalid segmenter config: backbone must be one of",
         ValueError),
    ],
)
def test_broken_configs_raise_a_file_error_naming_them(saved, tmp_path, content, fragment, cause):
    directory = _copy(saved, tmp_path / "m", config=content)
    with pytest.raises(BackswapFileError) as info:
        PatchSegmenter.from_pretrained(directory)
    message = str(info.value)
    assert message.startswith(f"{directory / 'config.json'}: "), message
    assert fragment in message
    if cause is not None:
        assert isinstance(info.value.__cause__, cause)


def test_config_that_does_not_fit_the_weights_names_the_weights(saved, tmp_path):
    directory = _copy(saved, tmp_path / "m", config=json.dumps({**_CONFIG, "width": 16}).encode())
    with pytest.raises(BackswapFileError, match=r"model\.safetensors: segmenter weights do not fit .* of another"):
        PatchSegmenter.from_pretrained(directory)


def test_a_bad_override_is_the_callers_error_not_the_files(saved, tmp_path):
    directory = _copy(saved, tmp_path / "m")
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 2") as info:
        PatchSegmenter.from_pretrained(directory, dropout=2)
    assert not isinstance(info.value, BackswapFileError)
    assert PatchSegmenter.from_pretrained(directory, dropout=0.0).config["dropout"] == 0.0


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors"])
def test_a_missing_file_names_the_folder_and_the_file(saved, tmp_path, missing):
    directory = _copy(saved, tmp_path / "m")
    (directory / missing).unlink()
    with pytest.raises(PretrainedNotFoundError) as info:
        PatchSegmenter.from_pretrained(directory, local_files_only=True)
    assert f"local directory {str(directory)!r}: exists but lacks {missing}" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


def test_loading_never_unpickles(saved, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    good = PatchSegmenter.from_pretrained(_copy(saved, tmp_path / "good"))
    assert all(torch.equal(a, b) for a, b in zip(good.state_dict().values(), _tiny().state_dict().values()))
    state_pickle = tmp_path / "state.pt"
    torch.save(_tiny().state_dict(), state_pickle)  # a torch pickle under the safetensors name
    directory = _copy(saved, tmp_path / "pickled", weights=state_pickle.read_bytes())
    with pytest.raises(BackswapFileError, match="not a readable safetensors file"):
        PatchSegmenter.from_pretrained(directory)


def test_io_readers(tmp_path):
    with pytest.raises(BackswapFileNotFoundError, match="nothing.json: settings not found") as info:
        read_json_object(tmp_path / "nothing.json", "settings")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BackswapFileError, match="deep.json: settings is not valid JSON: nested too deeply"):
        read_json_object(tmp_path / "deep.json", "settings")
    with pytest.raises(BackswapFileError, match="is a directory"):
        load_safetensors(tmp_path, "weights")
    with pytest.raises(BackswapFileNotFoundError, match="x.safetensors: weights not found"):
        load_safetensors(tmp_path / "x.safetensors", "weights")


@settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_weights_load_unchanged_or_raise_a_file_error(saved, data):
    """Truncated or bit-flipped weights (header or tensor bytes) either raise a BackswapFileError naming
    model.safetensors or load the very same tensors (a flip in metadata the loader ignores) -- unless a flip
    also broke the checksum's own key, which turns the check off (found by a 1 500-example run: 'b' -> 'c' in
    'backswap_sha256' plus a flip in a tensor). Nothing else."""
    good = saved[2]
    if data.draw(st.booleans(), label="truncate"):
        content = good[: data.draw(st.integers(0, len(good) - 1), label="cut at")]
    else:
        flipped = bytearray(good)
        header = 8 + int.from_bytes(good[:8], "little")
        for _ in range(data.draw(st.integers(1, 3), label="flips")):
            at = data.draw(st.integers(0, header - 1) | st.integers(0, len(good) - 1), label="at")
            flipped[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        content = bytes(flipped)
    directory = saved[0].parent / "fuzzed"
    _copy(saved, directory, weights=content)
    try:
        model = PatchSegmenter.from_pretrained(directory)
    except BackswapFileError as err:
        assert str(err).startswith(f"{directory / 'model.safetensors'}: "), str(err)
    else:
        from safetensors import safe_open

        from torch_backswap._io import CHECKSUM_KEY

        with safe_open(str(directory / "model.safetensors"), framework="pt") as handle:
            checked = CHECKSUM_KEY in (handle.metadata() or {})
        original = _tiny().state_dict()
        same = all(torch.equal(t, original[k]) and t.dtype == original[k].dtype for k, t in model.state_dict().items())
        assert same or not checked, "a file that carries its checksum loaded changed tensors"


def test_a_changed_tensor_byte_fails_the_checksum_and_files_without_one_still_load(saved, tmp_path):
    good = bytearray(saved[2])
    good[-3] ^= 0x01  # in the last tensor's bytes: still a well-formed safetensors file
    directory = _copy(saved, tmp_path / "flipped", weights=bytes(good))
    with pytest.raises(BackswapFileError, match="model.safetensors: segmenter weights file is corrupt: its tensors "
                                                "do not match the sha256 in its header"):
        PatchSegmenter.from_pretrained(directory)
    state = {k: v.contiguous() for k, v in _tiny().state_dict().items()}
    plain = _copy(saved, tmp_path / "plain", weights=safetensors_bytes(state, metadata={"format": "pt"}))
    assert torch.equal(PatchSegmenter.from_pretrained(plain).state_dict()["net.head.1.weight"],
                       state["net.head.1.weight"])


# -- durable writes ----------------------------------------------------------------------------------------


@pytest.fixture
def syscalls(monkeypatch):
    """Record ``("fsync", path)`` and ``("replace", src, dst)`` in the order they happen."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to map file descriptors to paths")
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kwargs):
        events.append(("replace", os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def assert_durable(events: list[tuple], target: Path) -> None:
    """``target`` was put in place by ``os.replace`` from a temporary file in its own folder that was
    ``fsync``-ed before, and the folder was ``fsync``-ed after."""
    target = Path(target).resolve()
    moves = [(i, e) for i, e in enumerate(events) if e[0] == "replace" and Path(e[2]).resolve() == target]
    assert moves, f"{target} was not written by os.replace: {events}"
    at, (_, src, _) = moves[-1]
    src = Path(src).resolve()
    assert src.parent == target.parent and src != target, f"temporary {src} is not next to {target}"
    assert ("fsync", str(src)) in events[:at], f"{src} was not fsync-ed before it replaced {target}"
    assert ("fsync", str(target.parent)) in events[at + 1:], f"{target.parent} was not fsync-ed after the rename"
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")], "a temporary file was left"


def _labels(seed: int, n: int = 5, size: int = 4) -> PatchLabels:
    g = torch.Generator().manual_seed(seed)
    return PatchLabels([f"img{seed}-{i}.png" for i in range(n)], torch.rand(n, size, size, generator=g) > 0.5)


@pytest.mark.parametrize("name,format", [("l.csv", "backswap"), ("masks.csv", "paper"), ("l.json", "json")])
def test_label_writes_are_durable(tmp_path, syscalls, name, format):
    path = _labels(0).write(tmp_path / name, format=format)
    assert_durable(syscalls, path)
    assert PatchLabels.read(path) == _labels(0)


def test_save_pretrained_is_durable_and_loads_back(tmp_path, syscalls):
    model = _tiny(1)
    model.save_pretrained(tmp_path / "m")
    for name in ("model.safetensors", "config.json", "README.md"):
        assert_durable(syscalls, tmp_path / "m" / name)
    loaded = PatchSegmenter.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    card = (tmp_path / "m" / "README.md").read_text()
    (tmp_path / "m" / "README.md").write_text(card + "\nmy notes\n")
    model.save_pretrained(tmp_path / "m")  # a model card is never overwritten
    assert (tmp_path / "m" / "README.md").read_text().endswith("my notes\n")


def test_finetune_best_model_and_history_are_durable(tmp_path, syscalls):
    from torch_backswap.finetune import _save

    _save(_tiny(), tmp_path / "out", [{"epoch": 1, "val_loss": 0.5}], {"best_epoch": 1})
    for name in ("model.safetensors", "config.json", "history.json"):
        assert_durable(syscalls, tmp_path / "out" / name)
    assert json.loads((tmp_path / "out" / "history.json").read_text())["best_epoch"] == 1


def test_swap_grid_png_is_durable(tmp_path, syscalls):
    from PIL import Image

    from torch_backswap.demo import save_swap_grid

    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    path = save_swap_grid(tmp_path / "grid.png", images, torch.rand(2, 1, 8, 8), images, images)
    assert_durable(syscalls, path)
    assert Image.open(path).format == "PNG"


def test_a_label_write_that_fails_half_way_leaves_the_old_file(tmp_path, monkeypatch):
    old = _labels(0).write(tmp_path / "l.csv")
    before = old.read_bytes()

    def write_half(self, data):
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", write_half)
    with pytest.raises(OSError, match="No space left"):
        _labels(1, n=50).write(old)
    monkeypatch.undo()
    assert old.read_bytes() == before and PatchLabels.read(old) == _labels(0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.csv"]


def test_a_weights_save_that_fails_half_way_leaves_the_old_files(tmp_path, monkeypatch):
    import safetensors.torch

    _tiny(0).save_pretrained(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    real = safetensors.torch.save_file

    def half_then_fail(tensors, filename, *args, **kwargs):
        real(tensors, filename, *args, **kwargs)
        Path(filename).write_bytes(Path(filename).read_bytes()[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        _tiny(1).save_pretrained(tmp_path / "m")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()} == before  # no temp files either
    PatchSegmenter.from_pretrained(tmp_path / "m")


def test_concurrent_label_writers_never_collide_and_readers_see_whole_files(tmp_path):
    path = tmp_path / "labels.csv"
    versions = {seed: _labels(seed, n=20 + seed) for seed in range(6)}
    versions[0].write(path)
    start = threading.Barrier(len(versions) + 1)
    errors: list[BaseException] = []
    reads: list[PatchLabels] = []
    writing = threading.Event()
    writing.set()

    def writer(seed):
        try:
            start.wait()
            for _ in range(8):
                versions[seed].write(path)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    def reader():
        start.wait()
        while writing.is_set():
            try:
                reads.append(PatchLabels.read(path))
            except BaseException as err:  # noqa: BLE001 - a partial file would land here
                errors.append(err)

    threads = [threading.Thread(target=writer, args=(s,)) for s in versions]
    watcher = threading.Thread(target=reader)
    for t in threads + [watcher]:
        t.start()
    for t in threads:
        t.join()
    writing.clear()
    watcher.join()
    assert not errors, errors[:3]
    assert reads, "the reader never ran"
    assert all(any(r == v for v in versions.values()) for r in reads)
    assert any(PatchLabels.read(path) == v for v in versions.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv"]


def test_concurrent_save_pretrained_to_one_folder(tmp_path):
    """Three threads save into one folder while a fourth loads from it: nobody fails or sees half a file."""
    models = [_tiny(seed) for seed in range(3)]
    models[0].save_pretrained(tmp_path / "m")
    errors: list[BaseException] = []
    loads: list[PatchSegmenter] = []
    start = threading.Barrier(len(models) + 1)
    saving = threading.Event()
    saving.set()

    def save(model):
        try:
            start.wait()
            for _ in range(4):
                model.save_pretrained(tmp_path / "m")
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    def load():
        start.wait()
        while saving.is_set():
            try:
                loads.append(PatchSegmenter.from_pretrained(tmp_path / "m", local_files_only=True))
            except BaseException as err:  # noqa: BLE001 - half a file would land here
                errors.append(err)

    threads = [threading.Thread(target=save, args=(m,)) for m in models]
    loader = threading.Thread(target=load)
    for t in threads + [loader]:
        t.start()
    for t in threads:
        t.join()
    saving.clear()
    loader.join()
    assert not errors, errors[:3]
    assert loads, "the loader never ran"
    loaded = PatchSegmenter.from_pretrained(tmp_path / "m").state_dict()
    assert any(all(torch.equal(loaded[k], v) for k, v in m.state_dict().items()) for m in models)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_durable_writes_get_the_mode_a_plain_open_would(tmp_path):
    import os

    from torch_backswap._io import atomic_write_text

    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "x.json", "{}")
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == (tmp_path / "plain.json").stat().st_mode & 0o777 == 0o644


# -- one hierarchy: every missing file the package reads is a BackswapFileNotFoundError (issue 24) -------------


def _missing_file_cases(tmp_path):
    from torch_backswap.bank import BackgroundBank
    from torch_backswap.datasets.stampbirds import StampBirds
    from torch_backswap.streaming import StreamingBackgroundBank

    bank = BackgroundBank(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    sharded = bank.save(tmp_path / "sharded", shard_size=2)
    (sharded / "shard-00001.safetensors").unlink()
    (tmp_path / "no-manifest").mkdir()
    weights_gone = tmp_path / "weights-gone"
    _tiny().save_pretrained(weights_gone)
    (weights_gone / "model.safetensors").unlink()
    config_gone = tmp_path / "config-gone"
    _tiny().save_pretrained(config_gone)
    (config_gone / "config.json").unlink()
    return {
        "bank file": (lambda: BackgroundBank.load(tmp_path / "missing.safetensors"), "missing.safetensors"),
        "bank shard": (lambda: BackgroundBank.load(sharded), "shard-00001.safetensors"),
        "bank manifest": (lambda: BackgroundBank.load(tmp_path / "no-manifest"), "no-manifest"),
        "streaming bank": (lambda: StreamingBackgroundBank(tmp_path / "missing-bank"), "missing-bank"),
        "streaming shard": (lambda: StreamingBackgroundBank(sharded, verify=True), "shard-00001.safetensors"),
        "labels": (lambda: PatchLabels.read(tmp_path / "missing.csv"), "missing.csv"),
        "weights file": (lambda: load_safetensors(tmp_path / "x.safetensors", "weights"), "x.safetensors"),
        "weights in a folder": (lambda: PatchSegmenter.from_pretrained(weights_gone, local_files_only=True),
                                "weights-gone"),
        "config in a folder": (lambda: PatchSegmenter.from_pretrained(config_gone, local_files_only=True),
                               "config-gone"),
        "pretrained folder": (lambda: PatchSegmenter.from_pretrained(tmp_path / "nothing", local_files_only=True),
                              "nothing"),
        "json config": (lambda: read_json_object(tmp_path / "c.json", "config"), "c.json"),
        "StampBirds pack": (lambda: StampBirds(root=tmp_path / "no-manifest"), "manifest.json"),
    }


@pytest.mark.parametrize("kind", ["bank file", "bank shard", "bank manifest", "streaming bank", "streaming shard",
                                  "labels", "weights file", "weights in a folder", "config in a folder",
                                  "pretrained folder", "json config", "StampBirds pack"])
def test_every_missing_file_is_one_error_class(tmp_path, kind):
    """``except BackswapFileError`` and old ``except FileNotFoundError`` code both catch every missing file."""
    load, named = _missing_file_cases(tmp_path)[kind]
    with pytest.raises(BackswapFileNotFoundError, match=named) as info:
        load()
    assert isinstance(info.value, BackswapFileError) and isinstance(info.value, FileNotFoundError)
    assert named in info.value.path or named in str(info.value)
