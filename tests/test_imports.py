"""The library's import graph, read statically with `ast`: no cycles between qsal_lab's modules, and
no module imports a layer above its own (ARCHITECTURE.md lists the layers).

Every import counts, also those inside functions: a lazy import only hides a cycle until the day
someone moves it to the top of the file.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "qsal_lab"

# Lowest first. A module may import modules of its own layer or of lower layers, never higher ones.
# A new top-level module or subpackage goes into one of these (and into ARCHITECTURE.md).
LAYERS = [
    {"files", "budget", "plots", "clinical", "machine"},  # no qsal_lab imports at all
    {"data", "standin"},              # loading data sets; the CIFAR-10 stand-in's generator
    {"models"},
    {"quant"},                         # fake-quant, PACT, PTQ, packing, ONNX int8
    {"saliency"},                      # attributions, saliency metrics, SGT's masking and loss
    {"train"},                         # the training loop: float, PACT, SGT
    {"edge", "pretrained"},
    {"experiments"},                   # drivers shared by a chapter and its benchmark
    {"checks", "cli", "grade"},        # what learners, users and instructors call
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, modules) -> set[str]:
    """qsal_lab modules that `name` imports. `from .quant import int8` names the module quant.int8,
    `from .quant import QATConfig` the package quant; `import qsal_lab.quant.int8` names quant.int8."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def deepest_module(dotted):
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted

    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(deepest_module(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: level 1 is this package, 2 its parent, ...
                parts = package.split(".")
                stem = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            for alias in node.names:
                full = f"{stem}.{alias.name}"
                found.add(full if full in modules else deepest_module(stem))
    return {m for m in found if m and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = library_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan), as a path."""
    index, low, stack, on_stack, components, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [cycle_through(sorted(c)[0], c, graph) for c in components]


def cycle_through(start, component, graph):
    """A path start -> ... -> start inside `component` (breadth-first, so the shortest)."""
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(graph[path[-1]] & component):
            if w == start:
                return path + [start]
            if w not in seen:
                seen.add(w)
                paths.append(path + [w])
    return [start]


def layer(module: str) -> int | None:
    parts = module.split(".")
    return RANK.get(parts[1]) if len(parts) > 1 else None


def test_import_graph_is_read():
    graph = import_graph()
    assert "qsal_lab.quant.int8" in graph and "qsal_lab.files" in graph["qsal_lab.quant.int8"]
    assert "qsal_lab.quant.pact" in graph["qsal_lab.quant"]


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles inside qsal_lab:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_every_module_has_a_layer():
    unplaced = sorted({m.split(".")[1] for m in library_modules() if m != "qsal_lab" and layer(m) is None})
    assert not unplaced, f"add these to LAYERS in {__file__} and to ARCHITECTURE.md: {unplaced}"


def test_no_module_imports_a_higher_layer():
    upward = [f"{a} imports {b}" for a, targets in import_graph().items() for b in sorted(targets)
              if layer(a) is not None and layer(b) is not None and layer(b) > layer(a)]
    assert not upward, "imports against the layering in ARCHITECTURE.md:\n" + "\n".join(upward)


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": set()}, None),
    ({"a": {"b", "c"}, "b": {"a"}, "c": set()}, ["a", "b", "a"]),
])
def test_find_cycles_names_the_cycle(graph, cycle):
    assert find_cycles(graph) == ([cycle] if cycle else [])
