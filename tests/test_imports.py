"""Who may import whom (docs/ARCHITECTURE.md): no cycles, and each floor of the library is a folder.

Every .py of the repo outside tests/ is parsed (ast, so imports inside functions count too) into a graph of
repo modules. Library modules are models/, utils/ and deploy/, each in exactly one floor of FLOORS; everything
else (train.py, val.py, detect.py, export.py, flops.py, hubconf.py, benchmarks/, data/scripts/) is a CLI, which
may import anything.
"""
from __future__ import annotations

import ast
import functools
import os
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {"tests", ".git", "__pycache__", "runs"}
LIBRARY = ("models", "utils", "deploy")


class Floor(NamedTuple):
    name: str
    folders: tuple[str, ...]  # what the floor holds: "x/" a folder and everything in it, else one file
    may_import: tuple[str, ...]  # the folders (and files) its modules may import


WINGS = ("utils/data/", "utils/train/", "utils/metrics/", "utils/infer/", "utils/weights/", "utils/profile/")
UTILS_INIT = "utils/__init__.py"  # the package's offline setup: imports nothing of the project
FLOORS = (  # lowest first; a floor imports only itself and the floors below it, as listed
    Floor("deploy/", ("deploy/",), ("deploy/",)),  # the ground floor: torch-free, copied alone to devices
    Floor("utils/core/", (UTILS_INIT, "utils/core/"), ("deploy/", UTILS_INIT, "utils/core/")),
    Floor("models/", ("models/",), ("deploy/", UTILS_INIT, "utils/core/", "models/")),
    Floor("the wings", WINGS, ("deploy/", UTILS_INIT, "utils/core/", "models/") + WINGS),
)


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
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from utils.core import boxes`
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


def in_folder(name: str, folder: str) -> bool:
    """Whether module `name` lies in `folder` ("utils/core/": the folder and everything below; else one file)."""
    if folder.endswith("/"):
        return under(name, folder.rstrip("/").replace("/", "."))
    return name == module_name(ROOT / folder)


def floor_of(name: str) -> Floor | None:
    """The floor whose folders hold module `name`; None for a CLI (or a library module outside every floor)."""
    return next((floor for floor in FLOORS if any(in_folder(name, f) for f in floor.folders)), None)


def layer_problem(importer: str, imported: str) -> str | None:
    """Why `importer` may not import `imported` (None when it may): the importer's floor must list its folder."""
    floor = floor_of(importer)
    if floor is None or any(in_folder(imported, f) for f in floor.may_import):
        return None
    if not is_library(imported):
        return "a library module (models/, utils/, deploy/) imports a CLI"
    return f"{floor.name} imports only {', '.join(floor.may_import)}"


def layer_problems(graph: dict[str, set[str]]) -> list[str]:
    return [f"  {a} imports {b}: {why}" for a in sorted(graph) for b in sorted(graph[a])
            if (why := layer_problem(a, b))]


def unplaced(names) -> list[str]:
    """Library modules that no floor holds (a new loose utils/x.py): each must sit in one floor's folder."""
    return sorted(n for n in names if is_library(n) and floor_of(n) is None)


def test_every_module_is_found_and_parsed():
    graph = import_graph()
    for name in ("train", "models.yolo", "utils.infer.backends", "utils.weights.checkpoint", "deploy.engines",
                 "utils.core.torch_utils"):
        assert name in graph
    assert "models.yolo" in graph["utils.train.loss"]  # a wing's edge into models/ is seen


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (break each by moving the shared piece or importing one way):\n" + "\n".join(
        "  " + " -> ".join(c) for c in found)


def test_every_library_module_sits_in_one_floor():
    assert unplaced(import_graph()) == [], "move each into the folder of its floor (FLOORS, docs/ARCHITECTURE.md)"
    for name in import_graph():
        assert sum(any(in_folder(name, f) for f in floor.folders) for floor in FLOORS) <= 1, name


def test_layers():
    problems = layer_problems(import_graph())
    assert not problems, "imports against docs/ARCHITECTURE.md's 'Who may import whom':\n" + "\n".join(problems)


@pytest.mark.parametrize("importer, imported, rule", [  # rule None: allowed
    ("deploy.run", "deploy.errors", None),
    ("deploy.run", "utils.core.log", "deploy/ imports only"),
    ("deploy.engines", "utils", "deploy/ imports only"),
    ("deploy.run", "models.yolo", "deploy/ imports only"),
    ("utils.core.torch_utils", "deploy.errors", None),
    ("utils.core.log", "utils", None),
    ("utils.core.torch_utils", "models.yolo", "utils/core/ imports only"),
    ("utils.core.log", "utils.infer.backends", "utils/core/ imports only"),
    ("models.yolo", "deploy.imgsz", None),
    ("models.yolo", "utils.core.torch_utils", None),
    ("models.heads", "utils.train.loss", "models/ imports only"),
    ("utils.weights.checkpoint", "models.yolo", None),
    ("utils.data.dataset", "utils.infer.backends", None),
    ("utils.infer.backends", "train", "imports a CLI"),
    ("models.yolo", "hubconf", "imports a CLI"),
    ("train", "utils.infer.backends", None),
])
def test_each_rule_names_what_it_refuses(importer, imported, rule):
    problem = layer_problem(importer, imported)
    assert problem is None if rule is None else rule in problem


def test_a_bad_edge_and_a_loose_module_are_reported():
    graph = {"models.heads": {"utils.train.loss", "deploy.imgsz"}, "utils.core.boxes": {"deploy.errors"}}
    assert layer_problems(graph) == ["  models.heads imports utils.train.loss: models/ imports only deploy/, "
                                     "utils/__init__.py, utils/core/, models/"]
    assert unplaced({"utils.loose", "utils.core.boxes", "train"}) == ["utils.loose"]


def test_a_cycle_is_reported_as_a_path():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]


def test_imports_inside_functions_and_relative_ones_count():
    tree = ast.parse("def f():\n    from utils.core import boxes\nfrom . import log\n")
    assert {"utils.core.boxes", "utils.core.log"} <= imported_names(tree, "utils.core.cli", False)


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
