"""No import cycles between the modules of our packages.

The graph is built from the source with :mod:`ast`, not by importing: every ``import`` and
``from ... import`` counts, wherever it is (module level, inside a function, under
``if TYPE_CHECKING:``), because a lazy or type-only import is still a dependency that only hides
the cycle. An edge goes to the deepest module the import names (``from daq_model.config import
DAQConfig`` -> ``daq_model.config``; ``from daq_model import config`` -> ``daq_model.config``).
The implicit import of a parent package's ``__init__`` is not an edge (every submodule would
depend on its package, and the package on the submodules it re-exports).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def our_packages(root: Path) -> list[str]:
    """Top-level packages of the repository (directories with an ``__init__.py``), tests aside."""
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and (p / "__init__.py").is_file() and p.name != "tests")


def module_files(root: Path, packages: list[str]) -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` file of ``packages``."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The deepest of ``modules`` that ``name`` (a module or an attribute of one) lives in."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name ``module`` imports (absolute; relative imports resolved), anywhere."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def import_graph(root: Path, packages: list[str]) -> dict[str, set[str]]:
    modules = module_files(root, packages)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = {_known(name, modules) for name in imported_names(module, path)}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative), each
    sorted; every import cycle lies inside one of them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def cycle_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete cycle inside ``component`` (for the failure message): a -> b -> ... -> a."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:  # breadth-first from start, inside the component, until we are back at start
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start] + path[::-1][1:] + [start]
                if child not in previous:
                    previous[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"{component} is not a cycle")


def test_our_packages_have_no_import_cycles():
    packages = our_packages(REPO)
    assert {"daq_model", "daq_train", "daq_eval", "pipeline", "jobs", "schemas"} <= set(packages)
    graph = import_graph(REPO, packages)
    assert len(graph) > 50  # the whole tree was read, not one package
    found = cycles(graph)
    assert not found, "import cycles (lazy and TYPE_CHECKING imports included):\n" + "\n".join(
        " -> ".join(cycle_path(graph, component)) for component in found)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize("how", ["top", "function", "type_checking", "relative", "from_package"])
def test_a_cycle_is_found_however_it_is_imported(tmp_path, how):
    back = {
        "top": "from pkg.a import A\n",
        "function": "def f():\n    from pkg.a import A\n    return A\n",
        "type_checking": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\n",
        "relative": "from ..a import A\n",
        "from_package": "from pkg import a\n",
    }[how]
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from pkg.sub.b import B\nA = 1\n",
                      "pkg/sub/__init__.py": "", "pkg/sub/b.py": "B = 2\n" + back,
                      "pkg/c.py": "import pkg.a\n", "other/__init__.py": "", "tests/__init__.py": ""})
    assert our_packages(tmp_path) == ["other", "pkg"]
    graph = import_graph(tmp_path, our_packages(tmp_path))
    assert graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b"]]
    assert cycle_path(graph, ["pkg.a", "pkg.sub.b"]) == ["pkg.a", "pkg.sub.b", "pkg.a"]


def test_no_cycle_without_the_back_edge(tmp_path):
    _write(tmp_path, {"pkg/__init__.py": "from pkg.a import A\n", "pkg/a.py": "from pkg.b import B\nA = 1\n",
                      "pkg/b.py": "import os\nB = 2\n"})
    graph = import_graph(tmp_path, ["pkg"])
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": set()}
    assert cycles(graph) == []
