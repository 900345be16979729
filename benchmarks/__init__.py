"""torch-backswap benchmarks, run as ``python -m benchmarks.<name>`` from the repository root.

Each module writes its own section of ``benchmarks/RESULTS.md`` through :mod:`benchmarks._common`.
"""
