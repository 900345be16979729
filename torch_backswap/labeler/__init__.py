"""Patch-labeling web page (``backswap label``): paint S×S cells, save after every image.

See :func:`serve_labeler` for the Python entry point and :mod:`.active` for the active-selection strategy.
"""

from .active import ActiveSelector, binary_entropy, cell_uncertainty
from .catalog import IMAGE_EXTENSIONS, ImageCatalog, InvalidImageId, sniff_image_type
from .server import LabelServer, serve_labeler
from .session import LabelSession

__all__ = [
    "IMAGE_EXTENSIONS",
    "ActiveSelector",
    "ImageCatalog",
    "InvalidImageId",
    "LabelServer",
    "LabelSession",
    "binary_entropy",
    "cell_uncertainty",
    "serve_labeler",
    "sniff_image_type",
]
