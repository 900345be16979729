"""The package's import graph has no cycle and no upward import: every ``from .x import`` /
``from torch_backswap.x import`` / ``import torch_backswap.x`` inside ``torch_backswap`` (module level and inside
functions alike) points one way, from a layer of :data:`LAYERS` to the same layer or one below."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "torch_backswap"


#: The package's floors, top first (import-linter's "layers" contract). A module may import from its own floor
#: (the graph stays acyclic) or any floor below, never from one above. A prefix ending in "." takes a subpackage.
LAYERS: list[tuple[str, ...]] = [
    ("__main__", "cli"),                                                   # entry points
    ("demo", "diagnose", "labeler", "labeler.", "datasets", "datasets.", "classifiers"),  # applications
    ("transform", "loader", "_kinds", "_sample_labels", "_runtime"),      # the swap
    ("build", "_bank_source", "cutout", "streaming", "bank", "finetune", "quantize", "edge_refiner", "refine"),
    ("functional", "composite", "jitter", "segmenter", "backbones", "inpaint", "labels", "label_files", "bankfiles",
     "metrics", "alpha", "hub"),                                          # kernels, models, data types, files
    ("_checks", "_io", "_image", "_dist", "_opencv"),                                # checks, durable files, image plumbing
]


def layer_of(module: str) -> int | None:
    """The floor of ``torch_backswap.<module>`` in :data:`LAYERS` (0 = top), ``None`` when no floor names it."""
    name = module.removeprefix("torch_backswap.")
    for depth, floor in enumerate(LAYERS):
        if any(name == entry or (entry.endswith(".") and name.startswith(entry)) for entry in floor):
            return depth
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, here: str, is_package: bool) -> list[str]:
    if node.level:
        base = here.split(".") if is_package else here.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        root = ".".join(base + ([node.module] if node.module else []))
    else:
        root = node.module or ""
    if not root.startswith("torch_backswap"):
        return []
    # `from . import x` / `from .pkg import mod`: the names may be submodules
    return [root] + [f"{root}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                targets = _resolve(node, name, path.name == "__init__.py")
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("torch_backswap")]
            for target in targets:
                if target in files and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]], skip_packages: bool = True) -> list[str] | None:
    """A cycle among modules (package ``__init__`` files re-export their children and are left out), or None."""
    nodes = {n for n in graph if not (skip_packages and (PACKAGE.parent / n.replace(".", "/") / "__init__.py").exists())}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n] & nodes):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(nodes):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_graph_sees_known_edges():
    graph = import_graph()
    assert "torch_backswap.functional" in graph["torch_backswap.transform"]
    assert "torch_backswap.composite" in graph["torch_backswap.functional"]


def test_no_import_cycle_between_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a floor to one above it, as ``"a (floor i) -> b (floor j)"``."""
    modules = [n for n in graph if n != "torch_backswap"]
    return [f"{a} (floor {layer_of(a)}) -> {b} (floor {layer_of(b)})" for a in modules for b in sorted(graph[a])
            if b != "torch_backswap" and layer_of(b) < layer_of(a)]


def test_every_module_has_a_floor_and_no_import_goes_up():
    graph = import_graph()
    assert [n for n in graph if n != "torch_backswap" and layer_of(n) is None] == [], "give new modules a floor"
    assert upward_imports(graph) == []


def test_the_layer_check_sees_an_upward_import():
    graph = import_graph()
    graph["torch_backswap.functional"] = graph["torch_backswap.functional"] | {"torch_backswap.transform"}
    assert upward_imports(graph) == ["torch_backswap.functional (floor 4) -> torch_backswap.transform (floor 2)"]


@pytest.mark.parametrize("low", ["torch_backswap.loader", "torch_backswap._sample_labels", "torch_backswap.functional",
                                 "torch_backswap.refine", "torch_backswap.segmenter", "torch_backswap.bank"])
def test_lower_layers_do_not_import_the_transform(low):
    graph = import_graph()
    seen, todo = set(), [low]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo.extend(graph.get(n, ()))
    assert "torch_backswap.transform" not in seen


def test_the_top_level_api_is_small_and_moved_names_still_resolve():
    import warnings

    import torch_backswap as tb
    from torch_backswap import functional, metrics, segmenter

    assert len(tb.__all__) <= 25 and len(set(tb.__all__)) == len(tb.__all__)
    assert all(hasattr(tb, name) for name in tb.__all__)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tb.mask_iou is metrics.mask_iou and tb.swap_backgrounds is functional.swap_backgrounds
        assert tb.TIGHT_THRESHOLD == segmenter.TIGHT_THRESHOLD
    assert [w.category for w in caught] == [DeprecationWarning] * 3
    with pytest.raises(AttributeError):
        tb.no_such_name


def test_one_cut_out_route():
    """Every cut-out of the package goes through CutOut (refine.cut_out_alpha underneath): the 0.2 second route,
    ``PatchSegmenter.predict_masks``, is gone and nothing calls it."""
    from torch_backswap import PatchSegmenter

    assert not hasattr(PatchSegmenter, "predict_masks")
    assert not [p.name for p in PACKAGE.rglob("*.py") if "predict_masks(" in p.read_text(encoding="utf-8")]
    bench = PACKAGE.parent / "benchmarks"
    assert not [p.name for p in bench.glob("*.py") if "predict_masks(" in p.read_text(encoding="utf-8")]


def test_the_research_harness_is_outside_the_package():
    """The package ships the product only: no experiment harness, no pack builder (benchmarks/ and tools/ hold them),
    and no module of it imports benchmarks or tools (they are not installed)."""
    import pkgutil

    import torch_backswap

    names = {m.name for m in pkgutil.walk_packages(torch_backswap.__path__, "torch_backswap.")}
    assert "torch_backswap.classifiers" in names and "torch_backswap.demo" in names
    assert not [n for n in names if n.startswith("torch_backswap.experiments") or n.endswith("build_stampbirds_pack")]
    assert not list(PACKAGE.rglob("build_stampbirds_pack.py"))
    assert (PACKAGE.parent / "tools" / "build_stampbirds_pack.py").is_file()
    outside = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            outside += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}" for r in roots if r in ("benchmarks", "tools")]
    assert not outside, outside
