"""build_bank: in memory, sharded and resumable (incl. a SIGKILL mid-build), label checks, segmenter untouched."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from torch_backswap._io import BackswapFileError
from torch_backswap.bank import BackgroundBank
from torch_backswap.bankfiles import MANIFEST, BankManifest
from torch_backswap.build import build_bank

sys.path.insert(0, str(Path(__file__).parent))
from _bank_jobs import BoxSegmenter, image_folder, scene

JOBS = Path(__file__).parent / "_bank_jobs.py"


def _files(directory: Path) -> dict[str, bytes]:
    """Every committed file of a bank directory (temporary files of a killed writer excluded)."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if not p.name.startswith(".")}


def _build(out, **kw):
    images, labels, _ = scene()
    kw = {"shard_size": 4, "batch_size": 2, "classes": ["a", "b", "c"], "metadata": {"test": True}, **kw}
    return build_bank(images, labels, BoxSegmenter(), out=out, progress=False, **kw)


def test_sharded_build_equals_in_memory_build_and_loads(tmp_path):
    images, labels, _ = scene()
    manifest = _build(tmp_path / "bank", shard_size=8, batch_size=4)
    assert isinstance(manifest, BankManifest) and manifest.count == 24 and len(manifest.shards) == 3
    assert manifest.build_stats["images"] == 24
    in_memory = build_bank(images, labels, BoxSegmenter(), batch_size=4, progress=False)
    loaded = BackgroundBank.load(tmp_path / "bank")
    # batches never straddle shards and every batch is seeded alike: shards concatenate to the same bank
    assert torch.equal(loaded.backgrounds, in_memory.backgrounds) and torch.equal(loaded.labels, labels)
    assert loaded.classes == ["a", "b", "c"] and loaded.metadata["test"] is True
    assert loaded.metadata["builder"]["shard_size"] == 8
    # each shard is a bank file of its own
    assert torch.equal(BackgroundBank.load(tmp_path / "bank" / manifest.shards[1].file).backgrounds,
                       in_memory.backgrounds[8:16])


def test_rerun_rebuilds_only_missing_shards_byte_identical(tmp_path):
    out = tmp_path / "bank"
    _build(out)
    clean = _files(out)
    (out / "shard-00002.safetensors").unlink()
    (out / MANIFEST).unlink()
    (out / ".shard-00003.safetensors.zz.tmp").write_bytes(b"half a shard")  # a killed writer's temp file
    again = _build(out)
    assert again.build_stats["images"] == 4  # only shard 2 was rebuilt
    assert _files(out) == clean and not list(out.glob(".*.tmp"))
    assert _build(out).build_stats["images"] == 0  # a finished build is left as is


def test_rerun_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "bank"
    _build(out)
    with pytest.raises(ValueError, match="other settings"):
        _build(out, batch_size=4)
    with pytest.raises(ValueError, match="classes has 2 names but labels go up to 2"):
        _build(tmp_path / "other", classes=["a", "b"])
    with pytest.raises(ValueError, match="shard_size needs out"):
        build_bank(*scene()[:2], BoxSegmenter(), shard_size=4, progress=False)


def test_sigkill_mid_build_then_resume_is_byte_identical(tmp_path):
    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    _build(clean)
    cmd = [sys.executable, str(JOBS), "build", str(resumed), "--sleep", "0.25"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env)
    try:
        deadline = time.monotonic() + 120
        while len(list(resumed.glob("shard-*.safetensors"))) < 2:  # 6 shards x 2 batches x 0.25 s: kill mid-way
            assert proc.poll() is None and time.monotonic() < deadline, "the build ended before it could be killed"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = len(list(resumed.glob("shard-*.safetensors")))
    assert 2 <= killed_at < 6 and not (resumed / MANIFEST).exists()
    _build(resumed)  # the same build again (in this process, to save a start-up): resumes after the kill
    assert _files(resumed) == _files(clean)
    assert torch.equal(BackgroundBank.load(resumed).backgrounds, BackgroundBank.load(clean).backgrounds)


def test_missing_or_corrupt_shard_is_named_on_load(tmp_path):
    out = tmp_path / "bank"
    _build(out)
    shard = out / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x10
    shard.write_bytes(bytes(data))
    with pytest.raises(BackswapFileError, match="shard-00001.safetensors.*sha256"):
        BackgroundBank.load(out)
    shard.write_bytes(bytes(data[:-7]))
    with pytest.raises(BackswapFileError, match="shard-00001.safetensors.*bytes"):
        BackgroundBank.load(out)
    shard.unlink()
    with pytest.raises(BackswapFileError, match="shard-00001.safetensors.*missing"):
        BackgroundBank.load(out)
    (out / MANIFEST).write_text("[1, 2]")
    with pytest.raises(BackswapFileError, match="manifest.json.*JSON object"):
        BackgroundBank.load(out)
    (out / MANIFEST).unlink()
    with pytest.raises(BackswapFileError, match="no manifest.json"):
        BackgroundBank.load(out)


@pytest.mark.parametrize("labels", [[0.5, 1.7, 0, 1], [0, 1, float("nan"), 2]])
def test_non_integer_labels_are_refused(labels):
    images, _, _ = scene(n=4)
    with pytest.raises(ValueError, match=r"labels must be integer class indices, got non-integer values \[(0.5|nan)"):
        build_bank(images, labels, BoxSegmenter(), progress=False)
    dataset = [(images[i], labels[i]) for i in range(4)]
    with pytest.raises(ValueError, match="labels yielded by the dataset must be integer"):
        build_bank(dataset, segmenter=BoxSegmenter(), progress=False)
    with pytest.raises(ValueError, match="labels must be >= 0"):
        build_bank(images, [0, -1, 0, 1], BoxSegmenter(), progress=False)


class _TinySegmenter(torch.nn.Module):
    """A real module with dropout and batch norm (train mode would change its output)."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                       torch.nn.Dropout(0.5), torch.nn.Conv2d(4, 1, 1), torch.nn.AdaptiveAvgPool2d(4))

    def forward(self, x):
        return self.net(x.float() / 255)[:, 0]


def test_building_never_moves_or_switches_the_callers_segmenter():
    images, labels, _ = scene(n=6)
    seg = _TinySegmenter().train()
    before = {k: v.clone() for k, v in seg.state_dict().items()}
    bank = build_bank(images, labels, seg, batch_size=4, progress=False)
    assert seg.training and all(m.training for m in seg.modules())
    assert all(torch.equal(before[k], v) for k, v in seg.state_dict().items())  # BN running stats untouched
    # the result is the eval-mode result, whatever mode the caller's module is in
    eval_bank = build_bank(images, labels, seg.eval(), batch_size=4, progress=False)
    assert not seg.training
    assert torch.equal(bank.backgrounds, eval_bank.backgrounds)


@pytest.mark.usefixtures("one_thread")
def test_default_hole_is_the_edge_route_and_refiner_none_the_papers():
    """build_bank's default hole is the measured route (flip-averaged logits -> bundled EdgeRefiner -> p > 0.2,
    grown size/32 px), as the robustness benchmark's ``backswap_edge`` cuts it; ``refiner=None`` is p > 0.1."""
    from torch_backswap import StampBirds
    from torch_backswap.edge_refiner import EdgeRefiner
    from torch_backswap.refine import cut_out_probability, loose_hole
    from torch_backswap.segmenter import PatchSegmenter, segment_probability

    data = StampBirds(split="train", n=12, image_size=64, seed=3)
    seg = PatchSegmenter.from_pretrained("torch-backswap/patchseg-tiny-s16")
    refiner = EdgeRefiner.from_pretrained("torch-backswap/edgerefine-tiny")
    kw = {"progress": False, "batch_size": 12}
    default = build_bank(data.images, data.labels, seg, **kw)
    prob = cut_out_probability(seg, data.images, refiner=refiner, flip_average=True)
    given = build_bank(data.images, data.labels, holes=loose_hole(prob, 0.2, dilate=2), **kw)
    assert torch.equal(default.backgrounds, given.backgrounds)
    assert {k: default.metadata[k] for k in ("loose_threshold", "tight_threshold", "flip_average", "dilate")} == {
        "loose_threshold": 0.2, "tight_threshold": 0.5, "flip_average": True, "dilate": 2}
    assert default.metadata["refiner"] == "torch-backswap/edgerefine-tiny"

    paper = build_bank(data.images, data.labels, seg, refiner=None, **kw)
    given = build_bank(data.images, data.labels, holes=segment_probability(seg, data.images) > 0.1, **kw)
    assert torch.equal(paper.backgrounds, given.backgrounds)
    assert "refiner" not in paper.metadata and paper.metadata["loose_threshold"] == 0.1
    assert not torch.equal(paper.backgrounds, default.backgrounds)

    # a loaded refiner is used as given (never moved or switched), explicit settings win
    refiner.train()
    explicit = build_bank(data.images, data.labels, seg, refiner=refiner, flip_average=False, loose_threshold=0.3,
                          dilate=0, **kw)
    assert refiner.training
    prob = cut_out_probability(seg, data.images, refiner=refiner.eval(), flip_average=False)
    given = build_bank(data.images, data.labels, holes=prob > 0.3, **kw)
    assert torch.equal(explicit.backgrounds, given.backgrounds)


def test_bad_refiner_and_dilate_are_named():
    images, labels, _ = scene(n=4)
    with pytest.raises(ValueError, match="refiner must be a learned refiner.*'guided'"):
        build_bank(images, labels, BoxSegmenter(), refiner="guided", progress=False)
    with pytest.raises(TypeError, match="refiner must be None.*got int"):
        build_bank(images, labels, BoxSegmenter(), refiner=3, progress=False)
    with pytest.raises(ValueError, match="dilate must be an int >= 0.*-1"):
        build_bank(images, labels, BoxSegmenter(), dilate=-1, progress=False)


def test_bank_cli_takes_the_edge_route_unless_refiner_none(tmp_path):
    from torch_backswap.cli import main

    folder = image_folder(str(tmp_path / "images"))
    metadata = {}
    for name, extra in (("default", []), ("paper", ["--refiner", "none"])):
        out = tmp_path / f"{name}.safetensors"
        assert main(["bank", folder, "--out", str(out), "--size", "32", "--batch-size", "8", "--no-progress",
                     *extra]) == 0
        metadata[name] = BackgroundBank.load(out).metadata
    assert metadata["default"]["refiner"] == "torch-backswap/edgerefine-tiny"
    assert metadata["default"]["loose_threshold"] == 0.2 and metadata["default"]["dilate"] == 1  # 32 px / 32
    assert "refiner" not in metadata["paper"] and metadata["paper"]["loose_threshold"] == 0.1


@pytest.mark.parametrize("with_manifest", [True, False])
def test_resume_rebuilds_a_shard_whose_bytes_changed(tmp_path, with_manifest):
    """A shard changed after it was written (same size, header still parses) is rebuilt, not kept with its new
    sha256 recorded over the good one: against the manifest's record, or without one the shard's own checksum."""
    out = tmp_path / "bank"
    _build(out)
    clean = _files(out)
    shard = out / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x10  # a tensor byte: the same size, the header still parses
    shard.write_bytes(bytes(data))
    if not with_manifest:
        (out / MANIFEST).unlink()
    again = _build(out)
    assert again.build_stats["images"] == 4  # shard 1 rebuilt, the others kept
    assert _files(out) == clean
    assert torch.equal(BackgroundBank.load(out).backgrounds[4:8], BackgroundBank.load(shard).backgrounds)
