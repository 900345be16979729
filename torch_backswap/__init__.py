"""torch-backswap: background swapping augmentation against spurious backgrounds.

The public API is re-exported here as modules land.
"""

__version__ = "0.1.0"
