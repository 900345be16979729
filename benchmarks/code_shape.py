"""Code-shape figures of the package (issue 9): longest class and function, files over 500 lines.

    python -m benchmarks.code_shape [TREE]      # TREE: a checkout (default: this one)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def code_shape(tree: Path) -> dict:
    """``{"longest_class": (lines, "file:Name"), "longest_function": ..., "files_over_500": [...]}``."""
    root = tree / "torch_backswap"
    longest = {"class": (0, ""), "function": (0, "")}
    big = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        n = len(source.splitlines())
        if n > 500:
            big.append(f"{path.relative_to(tree)} ({n})")
        for node in ast.walk(ast.parse(source)):
            kind = "class" if isinstance(node, ast.ClassDef) else "function" if isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
            if kind:
                lines = node.end_lineno - node.lineno + 1
                if lines > longest[kind][0]:
                    longest[kind] = (lines, f"{path.name}:{node.name}")
    return {"longest_class": longest["class"], "longest_function": longest["function"], "files_over_500": big}


if __name__ == "__main__":
    tree = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    for key, value in code_shape(tree).items():
        print(f"{key}: {value}")
