"""Under ``torchrun --nproc_per_node=2`` (gloo, CPU): the bank build and ``backswap bank`` equal a 1-process
build byte for byte, and a 2-rank DDP run with the swap in the DataLoader is reproducible with distinct ranks.

One torchrun launch (``tests/_bank_jobs.py dist``) serves every test of this module.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _bank_jobs import build, cli_args, image_folder

JOBS = Path(__file__).parent / "_bank_jobs.py"
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if not p.name.startswith(".")}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    folder = image_folder(str(root / "images"))
    out = root / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(JOBS), "dist",
           str(out), "--folder", folder]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600)
    failed = [line for line in done.stderr.splitlines() if "[rank1]" in line or "[rank0]" in line]
    assert done.returncode == 0, "\n".join(failed[:60]) + "\n" + done.stdout[-2000:] + done.stderr[-2000:]
    return root, out, done


def test_torchrun_bank_build_equals_one_process_build(run):
    root, out, _ = run
    build(str(root / "one"), shard_size=4, batch_size=2, sleep=0.0)
    assert _files(out / "build") == _files(root / "one")
    assert len(_files(root / "one")) == 7  # 6 shards + manifest


def test_cli_bank_under_torchrun_equals_one_process_cli(run, capsys):
    from torch_backswap.bank import BackgroundBank
    from torch_backswap.cli import main

    root, out, done = run
    assert done.stdout.count("wrote 24 backgrounds") == 1  # rank 0 reports, rank 1 stays quiet
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main(cli_args(str(root / "images"), str(root / "cli_one")))
    finally:
        torch.set_num_threads(threads)
    assert "6 shards + manifest" in capsys.readouterr().out
    assert _files(out / "cli") == _files(root / "cli_one")
    bank = BackgroundBank.load(out / "cli")
    assert len(bank) == 24 and bank.classes == ["class0", "class1", "class2"] and bank.size == (32, 32)


def test_ddp_smoke_ranks_draw_their_own_reproducible_streams(run):
    _, out, _ = run
    records = [json.loads((out / "ddp" / f"rank{r}.json").read_text()) for r in range(2)]
    for rec in records:
        assert rec["world"] == 2 and len(rec["batches"][0]) == 2 and all(map(float, rec["losses"]))
        assert rec["batches"][0] == rec["batches"][1]  # a rerun from the same seeds gives the same swaps
    assert records[0]["input"] == records[1]["input"]
    assert records[0]["fixed"] != records[1]["fixed"]  # the same batch swapped differently on each rank
    assert not set(records[0]["batches"][0]) & set(records[1]["batches"][0])
    # the documented pattern (DataLoader generator seeded per rank): workers of the two ranks differ
    assert not set(records[0]["same_input_workers_rank_generator"]) & set(records[1]["same_input_workers_rank_generator"])


def test_ddp_plain_pattern_workers_of_two_ranks_differ(run):
    _, out, _ = run
    records = [json.loads((out / "ddp" / f"rank{r}.json").read_text()) for r in range(2)]
    assert not set(records[0]["same_input_workers"]) & set(records[1]["same_input_workers"])
