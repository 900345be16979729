import json
import pickle

import pytest
import torch
from PIL import Image

from torch_backswap.bank import BackgroundBank
from torch_backswap.build import build_bank


def _bank(labels=(0, 0, 0, 0, 0, 0, 1, 2), size=16, classes=None):
    n = len(labels)
    g = torch.Generator().manual_seed(0)
    bg = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return BackgroundBank(bg, torch.tensor(labels), classes=classes, metadata={"note": "test"})


class _BoxSegmenter:
    """Fake segmenter: object logits in the central 2x2 of a 4x4 grid."""

    def __call__(self, images):
        logits = torch.full((images.shape[0], 4, 4), -8.0)
        logits[:, 1:3, 1:3] = 8.0
        return logits


def test_class_balanced_sampling_breaks_imbalance():
    bank = _bank()
    g = torch.Generator().manual_seed(1)
    idx = bank.sample_indices(6000, strategy="class_balanced", generator=g)
    freq = torch.bincount(bank.labels[idx], minlength=3).float() / 6000
    assert torch.allclose(freq, torch.full((3,), 1 / 3), atol=0.03)
    uni = bank.sample_indices(6000, strategy="uniform", generator=g)
    assert torch.bincount(bank.labels[uni], minlength=3)[0] / 6000 == pytest.approx(6 / 8, abs=0.03)


def test_other_class_never_returns_own_class():
    bank = _bank()
    labels = torch.tensor([0, 1, 2, 5] * 250)  # 5: a class the bank does not have
    idx = bank.sample_indices(1000, labels=labels, strategy="other_class", generator=torch.Generator().manual_seed(0))
    got = bank.labels[idx]
    assert not torch.any(got == labels)
    assert set(got[labels == 0].tolist()) == {1, 2}
    assert set(got[labels == 5].tolist()) == {0, 1, 2}
    soft = torch.nn.functional.one_hot(labels[:8], 6).float()
    assert bank.sample_indices(8, labels=soft, strategy="other_class").shape == (8,)


def test_single_class_other_class_is_a_clear_error():
    bank = _bank(labels=(1, 1, 1))
    with pytest.raises(ValueError, match="at least 2 classes"):
        bank.sample(2, labels=[1, 1], strategy="other_class")
    with pytest.raises(ValueError, match="needs the foreground labels"):
        _bank().sample(2, strategy="other_class")
    with pytest.raises(ValueError, match="strategy"):
        bank.sample(2, strategy="balanced")


def test_sample_reproducible_fresh_and_resized():
    bank = _bank()
    a = bank.sample(5, generator=torch.Generator().manual_seed(3))
    b = bank.sample(5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == (5, 3, 16, 16)
    a.zero_()
    assert bank.backgrounds.any()  # sample returns a fresh tensor, never a view into the bank
    r, idx = bank.sample(4, size=(24, 20), return_indices=True)
    assert r.shape == (4, 3, 24, 20) and r.dtype == torch.uint8 and idx.shape == (4,)


def test_save_load_bit_identical(tmp_path):
    bank = _bank(classes=["land", "water", "air"])
    path = bank.save(tmp_path / "bank.safetensors")
    loaded = BackgroundBank.load(path)
    assert torch.equal(loaded.backgrounds, bank.backgrounds) and loaded.backgrounds.dtype == torch.uint8
    assert torch.equal(loaded.labels, bank.labels)
    assert loaded.classes == ["land", "water", "air"] and loaded.metadata == {"note": "test"}
    assert path.read_bytes() == loaded.save(tmp_path / "again.safetensors").read_bytes()
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["backswap"])
    assert meta["resolution"] == [16, 16] and meta["classes"] == ["land", "water", "air"]
    with pytest.raises(FileNotFoundError):
        BackgroundBank.load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a background bank"):
        BackgroundBank.load(tmp_path / "other.safetensors")


def test_pickle_share_memory_and_cpu_view():
    bank = _bank()
    bank.share_memory_()
    assert bank.is_shared()
    clone = pickle.loads(pickle.dumps(bank))
    assert torch.equal(clone.backgrounds, bank.backgrounds) and clone.device.type == "cpu"
    assert bank.to("cpu") is bank and bank.cpu() is bank


def test_bad_construction():
    bg = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8"):
        BackgroundBank(bg.float(), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        BackgroundBank(bg, torch.tensor([0]))
    with pytest.raises(ValueError, match="classes"):
        BackgroundBank(bg, torch.tensor([0, 3]), classes=["a", "b"])


def test_build_from_tensor_with_segmenter_fills_the_object():
    images = torch.zeros(6, 3, 32, 32, dtype=torch.uint8)
    images[:, 1] = 90  # green background
    images[:, :, 8:24, 8:24] = torch.tensor([250, 0, 0], dtype=torch.uint8)[:, None, None]  # red object
    for refiner, loose in ((None, 0.1), ("torch-backswap/edgerefine-tiny", 0.2)):  # the paper's hole, the default
        bank = build_bank(images, torch.tensor([0, 1] * 3), _BoxSegmenter(), batch_size=4, progress=False,
                          refiner=refiner)
        assert len(bank) == 6 and bank.size == (32, 32) and bank.backgrounds.dtype == torch.uint8
        assert bank.backgrounds[:, 0].max() < 60  # the red object is gone
        assert bank.metadata["loose_threshold"] == loose and "Pyramid" in bank.metadata["inpainter"]
    assert bank.build_stats["images"] == 6 and bank.build_stats["images_per_s"] > 0


class _PilDataset(torch.utils.data.Dataset):
    def __init__(self):
        self.items = [
            (Image.new("RGB", (40, 30), (10, 200, 30)), 0),
            (Image.new("L", (20, 20), 128), 1),
            (Image.new("RGBA", (25, 35), (0, 0, 250, 100)), 1),
        ]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_build_from_dataset_resizes_any_size_and_mode():
    bank = build_bank(_PilDataset(), segmenter=_BoxSegmenter(), size=24, batch_size=2, progress=False)
    assert bank.size == (24, 24) and bank.labels.tolist() == [0, 1, 1]
    # given holes instead of a segmenter; grayscale tensor input
    gray = torch.rand(3, 1, 20, 20)
    holes = torch.zeros(3, 1, 20, 20, dtype=torch.bool)
    holes[:, :, 5:10, 5:10] = True
    b2 = build_bank(gray, [0, 1, 0], holes=holes, inpainter="mean", progress=False)
    assert b2.size == (20, 20) and b2.metadata["segmenter"] is None
    with pytest.raises(ValueError, match="segmenter"):
        build_bank(gray, [0, 1, 0], progress=False)
    with pytest.raises(ValueError, match="labels"):
        build_bank(gray, holes=holes, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        build_bank(torch.full((1, 3, 8, 8), float("nan")), [0], holes=holes[:1, :, :8, :8], progress=False)


# ----------------------------------------------------------------------------------------------------------
# gather, files: durable saves, every broken file is a BackswapFileError naming it, fuzzing
# ----------------------------------------------------------------------------------------------------------


def test_gather_matches_sample_and_checks_indices():
    bank = _bank()
    idx = bank.sample_indices(5, generator=torch.Generator().manual_seed(3))
    out = bank.gather(idx)
    assert torch.equal(out, bank.sample(5, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(out, bank.backgrounds[idx]) and out.dtype == torch.uint8
    assert bank.gather([0, 7], size=8).shape == (2, 3, 8, 8)
    with pytest.raises(IndexError, match=r"\[0, 8\).*\[8\]"):
        bank.gather([0, 8])
    with pytest.raises(ValueError, match="integer"):
        bank.gather(torch.tensor([0.5]))


def test_sharded_save_load_round_trip(tmp_path):
    bank = _bank(classes=["x", "y", "z"])
    bank.save(tmp_path / "dir", shard_size=3)
    assert max(p.name for p in (tmp_path / "dir").iterdir()) == "shard-00002.safetensors"
    loaded = BackgroundBank.load(tmp_path / "dir")
    assert torch.equal(loaded.backgrounds, bank.backgrounds) and torch.equal(loaded.labels, bank.labels)
    assert loaded.classes == ["x", "y", "z"] and loaded.metadata == {"note": "test"}


def test_threads_saving_one_path_never_collide(tmp_path):
    import threading

    banks = [_bank(labels=(i % 3,) * 4) for i in range(8)]
    target = tmp_path / "bank.safetensors"
    errors = []

    def save(b):
        try:
            for _ in range(5):
                b.save(target)
        except Exception as err:  # noqa: BLE001 - the test reports any failure
            errors.append(err)

    threads = [threading.Thread(target=save, args=(b,)) for b in banks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    loaded = BackgroundBank.load(target)  # one writer's complete file, never a mix
    assert any(torch.equal(loaded.labels, b.labels) for b in banks)
    assert [p.name for p in tmp_path.iterdir()] == ["bank.safetensors"]  # no temporary file left


def _foreign_files(tmp_path, good: bytes):
    from safetensors.torch import save_file

    def header_meta(meta):
        save_file({"backgrounds": torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "labels": torch.zeros(1, dtype=torch.long)},
                  str(tmp_path / "m.safetensors"), metadata={"backswap": meta})
        return (tmp_path / "m.safetensors").read_bytes()

    save_file({"x": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    other = (tmp_path / "x.safetensors").read_bytes()
    return {
        "zero-byte": (b"", "not a readable safetensors"),
        "truncated": (good[: len(good) // 2], "not a readable safetensors"),
        "not safetensors": (b"PK\x03\x04 a zip file, not a bank" * 4, "not a readable safetensors"),
        "foreign safetensors": (other, "no 'backswap' metadata"),
        "metadata a JSON list": (header_meta("[1, 2]"), "must be a JSON object, got list"),
        "metadata not JSON": (header_meta("{oops"), "unreadable bank metadata"),
        "other format": (header_meta('{"format": "x"}'), "has format 'x'"),
        "newer version": (header_meta(json.dumps({"format": "torch-backswap/background-bank", "version": 99})),
                          "format version 99"),
    }


def test_every_broken_bank_file_is_a_backswap_file_error(tmp_path):
    from safetensors.torch import save_file

    from torch_backswap._io import BackswapFileError

    good = _bank().save(tmp_path / "good.safetensors").read_bytes()
    for case, (data, message) in _foreign_files(tmp_path, good).items():
        path = tmp_path / f"{case.replace(' ', '_')}.safetensors"
        path.write_bytes(data)
        with pytest.raises(BackswapFileError, match=message) as info:
            BackgroundBank.load(path)
        assert str(path) in str(info.value), case
        assert isinstance(info.value, ValueError)
    # missing tensors: a bank header over other tensors
    meta = json.loads(__import__("safetensors").safe_open(str(tmp_path / "good.safetensors"), "pt").metadata()["backswap"])
    save_file({"backgrounds": torch.zeros(8, 3, 16, 16, dtype=torch.uint8)}, str(tmp_path / "half.safetensors"),
              metadata={"backswap": json.dumps(meta)})
    with pytest.raises(BackswapFileError, match=r"missing tensors \['labels'\]"):
        BackgroundBank.load(tmp_path / "half.safetensors")
    # the underlying error is chained
    (tmp_path / "z.safetensors").write_bytes(b"")
    with pytest.raises(BackswapFileError) as info:
        BackgroundBank.load(tmp_path / "z.safetensors")
    assert info.value.__cause__ is not None


FUZZ_EXAMPLES = {"truncated": 0, "bit_flipped": 0}


def _load_or_file_error(path, reference):
    """Property: a damaged bank file loads as exactly the saved bank, or raises BackswapFileError."""
    from torch_backswap._io import BackswapFileError

    try:
        loaded = BackgroundBank.load(path)
    except BackswapFileError:
        return "error"
    assert torch.equal(loaded.backgrounds, reference.backgrounds)
    assert torch.equal(loaded.labels, reference.labels)
    assert loaded.classes == reference.classes and loaded.metadata == reference.metadata
    return "bank"


def test_fuzz_truncated_and_bit_flipped_bank_files(tmp_path):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    reference = _bank(labels=(0, 1, 2, 1), size=4, classes=["a", "b", "c"])
    good = reference.save(tmp_path / "ref.safetensors").read_bytes()
    path = tmp_path / "fuzz.safetensors"
    outcomes = {"bank": 0, "error": 0}

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.integers(0, len(good) - 1))
    def truncated(n):
        path.write_bytes(good[:n])
        outcomes[_load_or_file_error(path, reference)] += 1
        FUZZ_EXAMPLES["truncated"] += 1

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.tuples(st.integers(0, len(good) - 1), st.integers(0, 7)), min_size=1, max_size=3))
    def bit_flipped(flips):
        data = bytearray(good)
        for pos, bit in flips:
            data[pos] ^= 1 << bit
        path.write_bytes(bytes(data))
        outcomes[_load_or_file_error(path, reference)] += 1
        FUZZ_EXAMPLES["bit_flipped"] += 1

    truncated()
    bit_flipped()
    print(f"\nbank loader fuzz: {FUZZ_EXAMPLES} examples, outcomes {outcomes}")
    assert outcomes["error"] > 0 and sum(FUZZ_EXAMPLES.values()) >= 300


def test_save_fsyncs_the_file_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    import os
    import stat

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        return real_fsync(fd)

    def replace(src, dst):
        events.append("replace")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    _bank().save(tmp_path / "bank.safetensors")
    assert events == ["fsync file", "replace", "fsync dir"]
    events.clear()
    _bank().save(tmp_path / "dir", shard_size=4)  # two shards, then the manifest: each one durable
    assert events == ["fsync file", "replace", "fsync dir"] * 3


@pytest.mark.parametrize("crash_after", [1, 2, "manifest"])
def test_an_interrupted_sharded_overwrite_leaves_the_old_bank_or_the_new_one(tmp_path, monkeypatch, crash_after):
    """Saving over a sharded bank used to rewrite its shards in place before the manifest, so a crash between the
    two left neither bank (found only on load). The new shards now take free names and the manifest is the switch."""
    import torch_backswap.bank as bank_module

    target = tmp_path / "dir"
    old = _bank(classes=["x", "y", "z"])
    old.save(target, shard_size=3)
    new = BackgroundBank(255 - old.backgrounds, torch.tensor([2, 1, 0, 0, 1, 2, 1, 0]), classes=["x", "y", "z"])
    real_write_shard, real_unlink, calls = bank_module.write_shard, type(target).unlink, []

    def write_shard(*args, **kwargs):  # the process dies after writing `crash_after` new shards
        calls.append(1)
        if crash_after != "manifest" and len(calls) > crash_after:
            raise KeyboardInterrupt("killed")
        return real_write_shard(*args, **kwargs)

    def unlink(self, *args, **kwargs):  # or after the manifest switch, before the old shards are removed
        if crash_after == "manifest":
            raise KeyboardInterrupt("killed")
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(bank_module, "write_shard", write_shard)
    monkeypatch.setattr(type(target), "unlink", unlink)
    with pytest.raises(KeyboardInterrupt):
        new.save(target, shard_size=3)
    monkeypatch.undo()
    loaded = BackgroundBank.load(target)
    expected = new if crash_after == "manifest" else old
    assert torch.equal(loaded.backgrounds, expected.backgrounds) and torch.equal(loaded.labels, expected.labels)
    # the next save completes and leaves only its own files
    new.save(target, shard_size=3)
    loaded = BackgroundBank.load(target)
    assert torch.equal(loaded.backgrounds, new.backgrounds) and torch.equal(loaded.labels, new.labels)
    listed = {info.file for info in __import__("torch_backswap.bankfiles").bankfiles.BankManifest.read(target).shards}
    assert {p.name for p in target.iterdir()} == listed | {"manifest.json"}
