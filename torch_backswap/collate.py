"""Kept for old imports: :class:`BackgroundSwapCollate` lives beside the transform it wraps
(:mod:`torch_backswap.transform`, as timm keeps ``FastCollateMixup`` in ``mixup.py``)."""

from .transform import BackgroundSwapCollate

__all__ = ["BackgroundSwapCollate"]
