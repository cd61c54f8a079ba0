"""Who may import whom (docs/ARCHITECTURE.md): no cycles, no library module importing a CLI, layers kept.

Every .py of the repo outside tests/ is parsed (ast, so imports inside functions count too) into a graph of
repo modules. Library modules are models/, utils/ and deploy/; everything else (train.py, val.py, detect.py,
export.py, flops.py, hubconf.py, benchmarks/, data/scripts/) is a CLI, which may import anything.
"""
from __future__ import annotations

import ast
import functools
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {"tests", ".git", "__pycache__", "runs"}
LIBRARY = ("models", "utils", "deploy")
MODELS_MAY_USE = {"utils", "utils.errors", "utils.log", "utils.yaml_io", "utils.torch_utils", "utils.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def repo_modules() -> dict[str, Path]:
    """Dotted name → file, for every .py outside tests/ (and caches, run folders)."""
    files = []
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        files += [Path(folder) / n for n in names if n.endswith(".py")]
    return {module_name(p): p for p in sorted(files)}


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def is_library(name: str) -> bool:
    return any(under(name, p) for p in LIBRARY)


def resolve(name: str, modules: dict[str, Path], importer: str) -> str | None:
    """The repo module an imported dotted name lands in (longest known prefix), or None for a third-party one.

    A script's siblings resolve too (`python benchmarks/x.py` puts benchmarks/ first on sys.path).
    """
    folder = importer.rpartition(".")[0]
    if folder and not is_library(importer) and f"{folder}.{name.split('.')[0]}" in modules:
        name = f"{folder}.{name}"
    parts = name.split(".")
    return next((".".join(parts[:k]) for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in modules), None)


def imported_names(tree: ast.AST, importer: str, is_package: bool) -> set[str]:
    """Every dotted name an `import` / `from ... import` anywhere in the file asks for (submodules included)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importer's package, one level up per extra dot
                package = importer if is_package else importer.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}".strip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from utils import boxes`
    return names


@functools.lru_cache(maxsize=None)
def import_graph() -> dict[str, set[str]]:
    modules = repo_modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        targets = {resolve(n, modules, name) for n in imported_names(tree, name, path.name == "__init__.py")}
        graph[name] = {t for t in targets if t and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle per strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on_stack, sccs = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.add(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(scc)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [cycle_through(min(scc), graph, scc) for scc in sccs]


def cycle_through(start: str, graph: dict[str, set[str]], scc: set[str]) -> list[str]:
    """The shortest path start → ... → start inside one strongly connected component (breadth first)."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & scc):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"{start} is in a cycle but none was found")


def is_core(name: str) -> bool:
    """A top-level utils/*.py (errors, log, boxes ...) or the utils package itself."""
    return name == "utils" or (name.count(".") == 1 and under(name, "utils") and not is_wing(name))


def is_wing(name: str) -> bool:
    """Inside a utils/ subpackage (utils/data, train, metrics, infer, profile)."""
    return name.startswith("utils.") and (ROOT / Path(*name.split(".")[:2])).is_dir()


def layer_problem(importer: str, imported: str) -> str | None:
    """Why `importer` may not import `imported` (None when it may)."""
    if is_library(importer) and not is_library(imported):
        return "a library module (models/, utils/, deploy/) imports a CLI"
    if under(importer, "deploy") and (under(imported, "utils") or under(imported, "models")):
        return "deploy/ is torch-free and imports nothing from utils/ or models/"
    if under(importer, "models") and not (under(imported, "models") or under(imported, "deploy")
                                          or imported in MODELS_MAY_USE):
        return f"models/ imports only models/, deploy/ and {', '.join(sorted(MODELS_MAY_USE - {'utils'}))}"
    if is_core(importer) and (under(imported, "models") or is_wing(imported)):
        return "core utils (utils/*.py) import no models/ and no wing (utils/data, train, metrics, infer, profile, weights)"
    return None


def test_every_module_is_found_and_parsed():
    graph = import_graph()
    for name in ("train", "models.yolo", "utils.infer.backends", "utils.weights.checkpoint", "deploy.engines"):
        assert name in graph
    assert "models.yolo" in graph["utils.train.loss"]  # a wing's edge into models/ is seen


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (break each by moving the shared piece or importing one way):\n" + "\n".join(
        "  " + " -> ".join(c) for c in found)


def test_layers():
    graph = import_graph()
    problems = [f"  {a} imports {b}: {why}" for a in sorted(graph) for b in sorted(graph[a])
                if (why := layer_problem(a, b))]
    assert not problems, "imports against docs/ARCHITECTURE.md's 'Who may import whom':\n" + "\n".join(problems)


@pytest.mark.parametrize("importer, imported, rule", [  # rule None: allowed
    ("utils.torch_utils", "models.yolo", "core utils"),
    ("utils.weights.checkpoint", "models.yolo", None),
    ("utils.log", "utils.infer.backends", "core utils"),
    ("utils.infer.backends", "models.yolo", None),
    ("utils.log", "utils", None),
    ("utils.infer.backends", "train", "imports a CLI"),
    ("deploy.run", "utils.errors", "deploy/"),
    ("models.heads", "utils.train.loss", "models/ imports only"),
    ("models.yolo", "deploy.imgsz", None),
])
def test_each_rule_names_what_it_refuses(importer, imported, rule):
    problem = layer_problem(importer, imported)
    assert problem is None if rule is None else rule in problem


def test_a_cycle_is_reported_as_a_path():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]


def test_imports_inside_functions_and_relative_ones_count():
    tree = ast.parse("def f():\n    from utils import boxes\nfrom . import errors\n")
    assert {"utils.boxes", "utils.errors"} <= imported_names(tree, "utils.log", False)


def test_test_files_have_unique_basenames():
    """tests/ has no __init__.py files, so pytest imports each test module by its basename: two files of one name
    in different folders stop the whole collection."""
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []


RUNTIME_OPENERS = {"InferenceSession", "Interpreter", "compile_model"}  # ONNX Runtime, LiteRT, OpenVINO


def test_runtimes_open_model_files_in_deploy_engines_only():
    """One adapter per runtime (docs/ARCHITECTURE.md): everything else runs a file through deploy/engines.py."""
    openers = set()
    for name, path in repo_modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if called in RUNTIME_OPENERS:
                    openers.add(name)
    assert openers == {"deploy.engines"}
