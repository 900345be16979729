"""Where a swap runs and which random stream it draws from: main process vs DataLoader worker, devices, seeds.

One small helper object, :class:`SwapRuntime`, owned by a :class:`~torch_backswap.transform.BackgroundSwap`:

* in the main process the swap runs on the bank's device with the caller's segmenter;
* in a DataLoader worker it runs on the CPU, from the bank's CPU tensors and a CPU copy of the segmenter made
  in the main process — CUDA is never touched in a worker;
* ``seed=None`` draws from torch's global RNG (which the DataLoader seeds per worker); ``seed=int`` (or a
  ``generator``) gives the swap its own stream: per worker it is derived from ``(seed, worker seed)`` and per
  distributed rank from ``(seed, rank)``, so workers and ranks never repeat each other and runs replay.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from torch import nn

from ._dist import current_rank

__all__ = ["SwapRuntime", "module_device", "parse_device"]


def module_device(module: Any) -> torch.device | None:
    """The device of a module's first parameter or buffer (``None`` for non-modules or empty modules)."""
    if isinstance(module, nn.Module):
        for t in module.parameters():
            return t.device
        for t in module.buffers():
            return t.device
    return None


def parse_device(*args: Any, **kwargs: Any) -> torch.device | None:
    """The device in ``nn.Module.to``'s arguments (``to(device)``, ``to(device, dtype)``, ``to(tensor)``,
    ``to(device=...)``), or ``None`` when only a dtype is given."""
    if "device" in kwargs and kwargs["device"] is not None:
        return torch.device(kwargs["device"])
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device
        if isinstance(a, (str, torch.device, int)) and not isinstance(a, bool):
            return torch.device(a)
    return None


def _cpu_copy(module: Any) -> Any:
    dev = module_device(module)
    if dev is None or dev.type == "cpu":
        return module
    return copy.deepcopy(module).cpu()


def _kept_cpu_copy(cpu_copy: Any, module: Any) -> Any:
    """The CPU copy to keep for workers when ``module`` is about to move off the CPU: a separate copy, never the
    module itself (``cpu_copy`` unchanged for non-modules)."""
    if not isinstance(module, nn.Module):
        return cpu_copy
    return _cpu_copy(copy.deepcopy(cpu_copy) if cpu_copy is module else cpu_copy)


class SwapRuntime:
    """Devices, worker processes and random streams of one swap (see the module docs)."""

    def __init__(self, cut_out: Any, seed: int | None, generator: torch.Generator | None) -> None:
        self.seed = seed
        self.generator = generator
        self.cpu_cut_out = _cpu_copy(cut_out)  # the cut-out (segmenter and learned refiner) workers run
        self._gen: torch.Generator | None = None
        self._gen_key: tuple | None = None

    @staticmethod
    def worker_info():
        return torch.utils.data.get_worker_info()

    def bank(self, bank: Any) -> Any:
        """The bank to read: its CPU view inside workers, itself elsewhere."""
        return bank.cpu() if self.worker_info() is not None else bank

    def cut_out(self, cut_out: Any) -> Any:
        """The cut-out to run: the caller's in the main process, the CPU copy inside workers (``ValueError`` when
        the swap has none: then every sample must carry its ``ObjectAlpha``)."""
        if cut_out is None:
            raise ValueError(
                "BackgroundSwap has no cut-out and the sample carries no ObjectAlpha: pass a CutOut or a segmenter "
                "as cut_out, or put the object's alpha in the sample as torch_backswap.ObjectAlpha (see "
                "ObjectAlphaDataset)"
            )
        info = self.worker_info()
        if info is None:
            return cut_out
        dev = module_device(self.cpu_cut_out)
        if dev is not None and dev.type != "cpu":
            raise RuntimeError(
                f"BackgroundSwap runs in DataLoader worker {info.id}, but its segmenter is on {dev} and no CPU copy "
                "exists; worker processes must not use CUDA. Create the swap with a CPU segmenter and move it with "
                "swap.to(device) (which keeps a CPU copy for workers), or swap batches in the main process after "
                ".to(device): `images, labels = swap(images.to(device), labels)`."
            )
        return self.cpu_cut_out

    def moved(self, cut_out: Any, device: torch.device | None) -> None:
        """Call before the caller's cut-out moves to ``device``: keep a separate CPU copy for workers."""
        if device is None or device.type == "cpu":
            return
        self.cpu_cut_out = _kept_cpu_copy(self.cpu_cut_out, cut_out)

    def generator_for_call(self) -> torch.Generator | None:
        """This process's stream (``None`` = torch's global RNG)."""
        info = self.worker_info()
        if info is None:
            if self.generator is not None:
                return self.generator
            if self.seed is None:
                return None
            rank = current_rank()
            key = ("main", os.getpid(), rank)
            seed = (int(self.seed) + 1_000_003 * rank) % (2**63)
        else:
            if self.seed is None and self.generator is None:
                return None  # DataLoader seeds each worker's global RNG differently
            base = int(self.seed) if self.seed is not None else int(self.generator.initial_seed())
            rank = current_rank()
            key = ("worker", os.getpid(), info.id, info.seed, rank)
            # the worker seed alone repeats across ranks that seed their RNG alike: mix the rank in
            seed = (base * 6364136223846793005 + int(info.seed) + 1_000_003 * rank) % (2**63)
        if self._gen_key != key:
            self._gen = torch.Generator().manual_seed(seed)
            self._gen_key = key
        return self._gen

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_gen"] = None
        state["_gen_key"] = None
        if isinstance(self.generator, torch.Generator):  # generators do not pickle: keep their seed
            state["generator"] = None
            if state["seed"] is None:
                state["seed"] = int(self.generator.initial_seed())
        return state
