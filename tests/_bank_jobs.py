"""Jobs the bank tests run in subprocesses (plain ``python`` or ``python -m torch.distributed.run``).

    python tests/_bank_jobs.py build OUT [--shard-size 4] [--batch-size 2] [--sleep 0.0]
    python tests/_bank_jobs.py ddp OUT [--steps 2]
    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/_bank_jobs.py dist OUT --folder DIR

``build``: the tiny test bank (24 images at 32 px, 3 classes, a box segmenter, the default pyramid inpainter)
built sharded into OUT; ``--sleep`` slows every segmenter call so a test can kill the build mid-way.
``ddp``: a 2-step DDP training smoke run with the swap in the DataLoader's collate; every rank writes
``OUT/rank{r}.json`` with a digest of each swapped batch (two runs from the same seeds), of a swap of one
fixed batch, and its losses.
``dist``: under torchrun, ``build`` into OUT/build, ``backswap bank FOLDER --shard-size 4`` into OUT/cli, and
``ddp`` into OUT/ddp — one launch for all the distributed tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch

N_IMAGES, SIZE, N_CLASSES = 24, 32, 3


def scene(n: int = N_IMAGES, size: int = SIZE, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deterministic images ``(n, 3, size, size)`` uint8, labels ``(n,)`` and object alphas ``(n, 1, size, size)``."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    alphas = torch.zeros(n, 1, size, size)
    for i in range(n):
        y, x = 4 + i % 8, 6 + i % 5
        alphas[i, :, y : y + 14, x : x + 12] = 1.0
    return images, torch.arange(n) % N_CLASSES, alphas


class BoxSegmenter:
    """Object logits in the central 2x2 cells of a 4x4 grid; optionally slow (for the kill test)."""

    def __init__(self, sleep: float = 0.0) -> None:
        self.sleep = sleep

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.sleep:
            time.sleep(self.sleep)
        logits = torch.full((images.shape[0], 4, 4), -8.0)
        logits[:, 1:3, 1:3] = 8.0
        return logits


def build(out: str, shard_size: int, batch_size: int, sleep: float) -> None:
    from torch_backswap.build import build_bank

    torch.set_num_threads(1)
    images, labels, _ = scene()
    build_bank(images, labels, BoxSegmenter(sleep), out=out, shard_size=shard_size, batch_size=batch_size,
               classes=["a", "b", "c"], metadata={"test": True}, progress=False)


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def ddp(out: str, steps: int) -> None:
    """DistributedSampler + ``collate_fn=BackgroundSwapCollate(swap)`` + DDP, gloo on CPU."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler
    from torchvision import tv_tensors

    from torch_backswap import BackgroundBank, BackgroundSwap, BackgroundSwapCollate
    from torch_backswap.alpha import ObjectAlpha

    torch.set_num_threads(1)
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)  # the same model init on every rank (DDP also broadcasts it)
    images, labels, alphas = scene()
    bank = BackgroundBank(scene(seed=1)[0], labels)
    samples = [(tv_tensors.Image(images[i]), ObjectAlpha(alphas[i]), int(labels[i])) for i in range(N_IMAGES)]
    swap = BackgroundSwap(bank, seed=0)
    sampler = DistributedSampler(samples, shuffle=True, seed=0)
    model = DistributedDataParallel(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, 3)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    record = {"rank": rank, "world": dist.get_world_size(), "batches": [[], []], "losses": []}
    for run in range(2):  # the same seeds twice: the swapped batches must repeat exactly
        torch.manual_seed(0)  # DataLoader derives its workers' seeds from it
        swap = BackgroundSwap(bank, seed=0)
        loader = DataLoader(samples, batch_size=4, sampler=sampler, collate_fn=BackgroundSwapCollate(swap),
                            num_workers=2)
        sampler.set_epoch(0)
        for step, (x, _alpha, y) in enumerate(loader):
            if step >= steps:
                break
            record["batches"][run].append(digest(x))
            if run == 0:
                loss = torch.nn.functional.cross_entropy(model(x.float() / 255), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                record["losses"].append(loss.item())
    # the same inputs on every rank, swapped in DataLoader workers: the plain pattern (every rank seeded alike,
    # so the workers' seeds are alike) and the documented one (the loader's generator seeded per rank)
    same = [samples[0]] * 8
    for key, gen in (("same_input_workers", None), ("same_input_workers_rank_generator",
                                                     torch.Generator().manual_seed(1000 + rank))):
        torch.manual_seed(0)
        swap = BackgroundSwap(bank, seed=0)
        loader = DataLoader(same, batch_size=4, collate_fn=BackgroundSwapCollate(swap), num_workers=2, generator=gen)
        record[key] = [digest(batch[0]) for batch in loader]
    # the same fixed batch swapped on every rank in the main process: the ranks' streams must differ
    fixed = swap((tv_tensors.Image(images[:4]), ObjectAlpha(alphas[:4]), labels[:4]))
    record["fixed"] = digest(fixed[0])
    record["input"] = digest(images[:4])
    Path(out, f"rank{rank}.json").write_text(json.dumps(record))
    dist.barrier()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("job", choices=["build", "ddp", "dist"])
    parser.add_argument("--folder", default=None, help="dist: an ImageFolder for the CLI build")
    parser.add_argument("out")
    parser.add_argument("--shard-size", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args(argv)
    if args.job == "build":
        build(args.out, args.shard_size, args.batch_size, args.sleep)
    elif args.job == "ddp":
        os.makedirs(args.out, exist_ok=True)
        ddp(args.out, args.steps)
        torch.distributed.destroy_process_group()
    else:
        import torch.distributed as dist

        from torch_backswap.cli import main as cli

        build(os.path.join(args.out, "build"), args.shard_size, args.batch_size, 0.0)  # build_bank inits gloo
        # from here on: a group the caller owns, used by the CLI and DDP. A second default group in one process
        # must not reuse the first one's rendezvous keys (torch restarts the group count after destroying it,
        # so a rank could read the old group's address and be refused): give it its own store prefix.
        agent_store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False)
        dist.init_process_group("gloo", store=dist.PrefixStore("caller-owned/", agent_store),
                                rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
        cli(cli_args(args.folder, os.path.join(args.out, "cli")))
        os.makedirs(os.path.join(args.out, "ddp"), exist_ok=True)
        ddp(os.path.join(args.out, "ddp"), args.steps)
        dist.destroy_process_group()


def cli_args(folder: str, out: str) -> list[str]:
    """``backswap bank`` arguments of the distributed test (the bundled segmenter, 32 px, shards of 4)."""
    return ["bank", folder, "--out", out, "--shard-size", "4", "--size", "32", "--batch-size", "4", "--no-progress"]


def image_folder(root: str) -> str:
    """An ImageFolder of the 24 test images (3 classes) as PNG files; returns its path."""
    from PIL import Image

    images, labels, _ = scene()
    for i in range(N_IMAGES):
        d = Path(root, f"class{int(labels[i])}")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(d / f"{i:02d}.png")
    return root


if __name__ == "__main__":
    main(sys.argv[1:])
