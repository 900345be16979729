"""``python -m torch_backswap`` is the ``backswap`` command."""

from torch_backswap.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
