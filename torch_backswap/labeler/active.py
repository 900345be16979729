"""Active selection for the labeler: which image should the person label next?

Uncertainty is the **mean binary entropy of the segmenter's cell probabilities**: an image whose cells
all sit near 0 or 1 is one the segmenter already handles, an image with many cells near 0.5 is where a
label teaches it most.

Uncertainty alone picks *clusters*: the images the segmenter finds hard tend to look alike (the same
background photo, the same pose), so a round of picks teaches one thing many times. The selector therefore
offers three strategies (``strategy=``):

* ``"uncertainty"`` – the most uncertain image (the original rule);
* ``"topk_random"`` – a seeded uniform draw among the ``top_k`` most uncertain images: uncertainty narrows
  the pool, chance spreads the picks over it (needs no features);
* ``"kcenter"`` (default) – k-center greedy among the ``top_k`` most uncertain images: the one whose
  feature vector is farthest from every image already covered (labeled, or picked before). Needs features:
  the ``score`` callable returns ``(uncertainty, features)`` (e.g. from :func:`segmenter_features`);
  without them it warns once and picks by uncertainty alone.

Measured on StampBirds (``python -m benchmarks.labeling_efficiency``, 5 seeds): uncertainty alone is
*worse* than random order at equal label counts; k-center is the best active strategy and on par with
random order (not significantly better).

Strategy for big folders (:class:`ActiveSelector`): nothing is scored up front. Every time the next image
is requested, one more chunk of not-yet-scored images (walk order) is scored, so the candidate pool grows
with the labeling session and the first image is offered after scoring a single chunk. When the
segmenter is retrained, existing scores become *stale*; they are not all recomputed — the best stale
candidates are re-scored a chunk at a time until the ``top_k`` best candidates carry fresh scores (lazy
re-ranking; stale scores only decide the order in which candidates are re-checked).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

__all__ = ["SELECTION_STRATEGIES", "ActiveSelector", "binary_entropy", "cell_uncertainty", "segmenter_features"]

#: Strategies of :class:`ActiveSelector`.
SELECTION_STRATEGIES = ("uncertainty", "topk_random", "kcenter")


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


@torch.no_grad()
def segmenter_features(segmenter: torch.nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    """Cell logits and a global feature vector per image, from one forward pass.

    The feature vector is the spatial mean of the backbone's last feature map (the ``"tiny"`` backbone's
    ``net.features``, a torchvision backbone's ``net[0]``), L2-normalised; a segmenter without either
    falls back to its flattened cell probabilities.

    Args:
        segmenter: a :class:`~torch_backswap.segmenter.PatchSegmenter` (eval mode is the caller's job).
        images: ``(B, 3, H, W)`` uint8 or float in ``[0, 1]``.

    Returns:
        ``(logits, features)``: float ``(B, S, S)`` and float32 ``(B, D)`` with unit rows.
    """
    net = getattr(segmenter, "net", None)
    body = getattr(net, "features", None)
    if body is None and isinstance(net, torch.nn.Sequential):
        body = net[0]
    if body is None or not hasattr(segmenter, "normalize"):
        logits = segmenter(images)
        feats = torch.sigmoid(logits.float()).flatten(1)
    else:
        captured: list[Tensor] = []
        handle = body.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            logits = segmenter(images)
        finally:
            handle.remove()
        feats = captured[-1].float().mean((2, 3))
    return logits, torch.nn.functional.normalize(feats.float(), dim=1)


class ActiveSelector:
    """Lazy, chunked, diversity-aware uncertainty ranking over a growing list of image ids.

    Args:
        ids_chunk: ``ids_chunk(start, size) -> list[str]`` returns ids in a fixed order (fewer at the end).
        score: ``score(ids)`` → uncertainty ``Tensor (len(ids),)`` under the current segmenter, or a pair
            ``(uncertainty (len(ids),), features (len(ids), D))`` (features are needed by ``"kcenter"``).
        chunk_size: images scored per request (and per re-ranking round).
        strategy: one of :data:`SELECTION_STRATEGIES` (see the module docstring); default ``"kcenter"``.
        top_k: size of the uncertain pool that ``"topk_random"`` / ``"kcenter"`` choose from (ignored by
            ``"uncertainty"``).
        seed: seed of ``"topk_random"``'s draws (the picks are reproducible for a given call sequence).

    Not thread-safe on its own: the server calls it under its lock.
    """

    def __init__(
        self,
        ids_chunk: Callable[[int, int], list[str]],
        score: Callable[[Sequence[str]], Tensor | tuple[Tensor, Tensor]],
        chunk_size: int = 32,
        *,
        strategy: str = "kcenter",
        top_k: int = 40,
        seed: int = 0,
    ) -> None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        if strategy not in SELECTION_STRATEGIES:
            raise ValueError(f"strategy must be one of {SELECTION_STRATEGIES}, got {strategy!r}")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        self._ids_chunk = ids_chunk
        self._score = score
        self.chunk_size = chunk_size
        self.strategy = strategy
        self.top_k = top_k
        self._generator = torch.Generator().manual_seed(int(seed))
        self.version = 0
        self._scanned = 0
        self._exhausted = False
        # id -> (score, version that produced it)
        self.scores: dict[str, tuple[float, int]] = {}
        # id -> (feature vector, version that produced it)
        self.features: dict[str, tuple[Tensor, int]] = {}
        #: ids returned by :meth:`pick`, in order (they count as covered for ``"kcenter"``).
        self.picked: list[str] = []
        self._warned = False

    def invalidate(self) -> None:
        """Mark every score stale (call after the segmenter changed)."""
        self.version += 1

    def _score_ids(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        out = self._score(ids)
        values, feats = out if isinstance(out, tuple) else (out, None)
        if not isinstance(values, Tensor) or values.shape != (len(ids),):
            raise ValueError(f"score(ids) must return a ({len(ids)},) tensor, got "
                             f"{getattr(values, 'shape', type(values).__name__)}")
        if feats is not None:
            if not isinstance(feats, Tensor) or feats.ndim != 2 or feats.shape[0] != len(ids):
                raise ValueError(f"score(ids) features must be a ({len(ids)}, D) tensor, got "
                                 f"{getattr(feats, 'shape', type(feats).__name__)}")
            for image_id, row in zip(ids, feats.detach().float().cpu()):
                self.features[image_id] = (row, self.version)
        elif self.strategy == "kcenter" and not self._warned:
            self._warned = True
            warnings.warn("ActiveSelector(strategy='kcenter') got no features from score(ids) (it should return "
                          "(uncertainty, features)); picking by uncertainty alone", stacklevel=3)
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

    def _covered_features(self, covered: Iterable[str]) -> Tensor | None:
        ids = list(dict.fromkeys([*self.picked, *covered]))
        stale = [i for i in ids if self.features.get(i, (None, -1))[1] != self.version]
        for start in range(0, len(stale), self.chunk_size):
            self._score_ids(stale[start : start + self.chunk_size])
        rows = [self.features[i][0] for i in ids if i in self.features]
        return torch.stack(rows) if rows else None

    def _choose(self, pool: list[str], covered: Iterable[str]) -> str:
        if self.strategy == "uncertainty" or len(pool) == 1:
            return pool[0]
        if self.strategy == "topk_random":
            return pool[int(torch.randint(len(pool), (1,), generator=self._generator))]
        if not all(i in self.features for i in pool):  # no features (warned once): uncertainty alone
            return pool[0]
        done = self._covered_features(covered)
        if done is None:  # nothing covered yet: the most uncertain one
            return pool[0]
        cand = torch.stack([self.features[i][0] for i in pool])
        distance = torch.cdist(cand, done).min(dim=1).values
        return pool[int(distance.argmax())]  # ties: the more uncertain one (pool is sorted)

    def pick(self, exclude: Callable[[str], bool], covered: Iterable[str] = ()) -> str | None:
        """The next id to label, after scoring one more chunk; ``None`` when none is left.

        Args:
            exclude: predicate for ids that must not be offered (already labeled, skipped, on screen).
            covered: ids already labeled, for ``"kcenter"``'s coverage (ids returned by earlier picks count
                as covered anyway).
        """
        self.scan_more()
        k = 1 if self.strategy == "uncertainty" else self.top_k
        while True:
            candidates = [(s, v, i) for i, (s, v) in self.scores.items() if not exclude(i)]
            if not candidates:
                if self.scan_more() == 0:
                    return None
                continue
            candidates.sort(key=lambda c: -c[0])
            stale = [c for c in candidates[:k] if c[1] != self.version]
            if not stale:
                choice = self._choose([c[2] for c in candidates[:k]], covered)
                self.picked.append(choice)
                return choice
            stale = [c for c in candidates if c[1] != self.version]
            self._score_ids([c[2] for c in stale[: self.chunk_size]])
