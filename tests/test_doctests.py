"""The docstring examples of the library run as doctests (part of the README test command)."""

import doctest
import importlib
import pkgutil

import pytest

import torch_backswap

SKIP = ("torch_backswap.labeler.server", "torch_backswap.__main__", "torch_backswap.cli")
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(torch_backswap.__path__, "torch_backswap.")
    if not m.name.startswith(SKIP)
)


def test_there_are_examples():
    finder = doctest.DocTestFinder()
    counted = sum(
        len([t for t in finder.find(importlib.import_module(name)) if t.examples]) for name in MODULES
    )
    assert counted >= 5, f"only {counted} docstring examples in the library"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"
