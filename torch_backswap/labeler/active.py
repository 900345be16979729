"""Active selection for the labeler: which image should the person label next?

Uncertainty is the **mean binary entropy of the segmenter's cell probabilities**: an image whose cells
all sit near 0 or 1 is one the segmenter already handles, an image with many cells near 0.5 is where a
label teaches it most.

Strategy for big folders (:class:`ActiveSelector`): nothing is scored up front. Every time the next image
is requested, one more chunk of not-yet-scored images (walk order) is scored, so the candidate pool grows
with the labeling session and the first image is offered after scoring a single chunk. When the
segmenter is retrained, existing scores become *stale*; they are not all recomputed — the best stale
candidates are re-scored a chunk at a time until the top candidate carries a fresh score (lazy
re-ranking; stale scores only decide the order in which candidates are re-checked).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["ActiveSelector", "binary_entropy", "cell_uncertainty"]


def binary_entropy(probability: Tensor, eps: float = 1e-6) -> Tensor:
    """Element-wise binary entropy in bits.

    Args:
        probability: float tensor of any shape with values in [0, 1].
        eps: clamp so that 0 and 1 give 0 instead of NaN.

    Returns:
        Tensor of the same shape and dtype, values in [0, 1] (1 at p = 0.5).
    """
    p = probability.clamp(eps, 1.0 - eps)
    return -(p * torch.log2(p) + (1.0 - p) * torch.log2(1.0 - p))


def cell_uncertainty(probability: Tensor) -> Tensor:
    """Mean binary entropy over the cells of each image.

    Args:
        probability: (B, S, S) float cell probabilities in [0, 1].

    Returns:
        (B,) float, 0 = certain everywhere, 1 = every cell at 0.5.
    """
    if probability.ndim != 3:
        raise ValueError(f"probability must have shape (B, S, S), got {tuple(probability.shape)}")
    return binary_entropy(probability.float()).flatten(1).mean(dim=1)


class ActiveSelector:
    """Lazy, chunked uncertainty ranking over a growing list of image ids.

    Args:
        ids_chunk: ``ids_chunk(start, size) -> list[str]`` returns ids in a fixed order (fewer at the end).
        score: ``score(ids) -> Tensor (len(ids),)`` uncertainty per image under the current segmenter.
        chunk_size: images scored per request (and per re-ranking round).

    Not thread-safe on its own: the server calls it under its lock.
    """

    def __init__(
        self,
        ids_chunk: Callable[[int, int], list[str]],
        score: Callable[[Sequence[str]], Tensor],
        chunk_size: int = 32,
    ) -> None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        self._ids_chunk = ids_chunk
        self._score = score
        self.chunk_size = chunk_size
        self.version = 0
        self._scanned = 0
        self._exhausted = False
        # id -> (score, version that produced it)
        self.scores: dict[str, tuple[float, int]] = {}

    def invalidate(self) -> None:
        """Mark every score stale (call after the segmenter changed)."""
        self.version += 1

    def _score_ids(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        values = self._score(ids)
        for image_id, value in zip(ids, values.tolist()):
            self.scores[image_id] = (float(value), self.version)

    def scan_more(self) -> int:
        """Score the next chunk of unseen ids; returns how many were scored (0 at the end)."""
        if self._exhausted:
            return 0
        ids = self._ids_chunk(self._scanned, self.chunk_size)
        self._scanned += len(ids)
        if len(ids) < self.chunk_size:
            self._exhausted = True
        self._score_ids(ids)
        return len(ids)

    def pick(self, exclude: Callable[[str], bool]) -> str | None:
        """The most uncertain id not excluded, after scoring one more chunk; ``None`` when none is left.

        Args:
            exclude: predicate for ids that must not be offered (already labeled, skipped, on screen).
        """
        self.scan_more()
        while True:
            candidates = [(s, v, i) for i, (s, v) in self.scores.items() if not exclude(i)]
            if not candidates:
                if self.scan_more() == 0:
                    return None
                continue
            best = max(candidates, key=lambda c: c[0])
            if best[1] == self.version:
                return best[2]
            stale = sorted((c for c in candidates if c[1] != self.version), key=lambda c: -c[0])
            self._score_ids([c[2] for c in stale[: self.chunk_size]])
