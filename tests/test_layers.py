"""The layers stay visible: no module imports a layer above its own (docs/ARCHITECTURE.md has the picture).

Every `import` in engine/, splat/, completion/, viewer/ and cli.py counts, also the lazy ones inside
functions: a lazy upward import is still a dependency a newcomer cannot see from the layout.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("splat", "completion", "engine", "viewer")

# (module prefix, layer). A module belongs to the room with the longest matching prefix; it may import its
# own room and any lower layer, never a higher one nor a sibling room of the same layer.
ROOMS: tuple[tuple[str, int], ...] = (
    ("splat", 0),
    ("completion", 1),  # the package root: a docstring only
    ("completion.network", 1),
    ("engine", 2),  # base: device, images, typed, events, config, fusion, cluster, trajectory
    ("engine.backends", 3),
    ("engine.pipeline", 4),
    ("engine.rundir", 4),
    ("engine.run", 4),
    ("engine.extend", 4),
    ("engine.outcome", 4),
    ("engine.quality", 4),
    ("engine.bench", 5),
    ("engine.tools", 5),
    ("completion.training", 6),
    ("viewer", 6),
    ("completion.cli", 7),
    ("cli", 8),  # the entry point: registers completion.cli's sub-app
)
LOOP = {"engine.pipeline", "engine.rundir", "engine.run", "engine.extend", "engine.outcome", "engine.quality"}


def room_of(module: str) -> tuple[str, int]:
    best = max((r for r in ROOMS if module == r[0] or module.startswith(r[0] + ".")), key=lambda r: len(r[0]))
    return ("engine.loop", 4) if best[0] in LOOP else best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import of a stitch module in `path`, resolved to a module name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            # `from pkg import sub` names a submodule when pkg is a package of ours
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                is_module = (REPO / candidate.replace(".", "/")).with_suffix(".py").is_file() or (
                    REPO / candidate.replace(".", "/") / "__init__.py"
                ).is_file()
                found.append((node.lineno, candidate if is_module else module))
    return [(line, m) for line, m in found if m.split(".")[0] in (*PACKAGES, "cli")]


def source_files() -> list[Path]:
    return [REPO / "cli.py", *sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))]


def upward_imports() -> list[str]:
    bad = []
    for path in source_files():
        mod = module_name(path)
        room, layer = room_of(mod)
        for line, dep in project_imports(path):
            dep_room, dep_layer = room_of(dep)
            if dep_room != room and dep_layer >= layer:
                where = f"{path.relative_to(REPO)}:{line}"
                bad.append(
                    f"{where} {mod} ({room}, layer {layer}) imports {dep} ({dep_room}, layer {dep_layer})"
                )
    return bad


def test_no_module_imports_a_layer_above_its_own():
    bad = upward_imports()
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_every_module_has_a_room():
    for path in source_files():
        room_of(module_name(path))  # max() of an empty sequence raises: a new top-level package needs a room


@pytest.mark.parametrize(
    ("module", "dep"),
    [
        ("splat.render", "engine.device"),  # the ground importing the loop
        ("engine.backends.depth", "engine.pipeline"),  # a backend importing the loop that calls it
        ("engine.run", "viewer"),  # the loop importing the viewer that shows it
        ("engine.bench.geometry", "engine.tools.refine"),  # siblings
        ("completion.network.model", "completion.training.train"),
    ],
)
def test_the_rule_catches_an_upward_import(module: str, dep: str):
    """The check itself can fail: each pair here would be reported."""
    room, layer = room_of(module)
    dep_room, dep_layer = room_of(dep)
    assert dep_room != room and dep_layer >= layer


def test_files_stay_small_or_say_why():
    """About 400 lines per module; a longer one says why in its docstring (a line with 'One file')."""
    long = []
    for path in source_files():
        lines = path.read_text().splitlines()
        doc = ast.get_docstring(ast.parse("\n".join(lines))) or ""
        if len(lines) > 420 and "One file" not in doc:
            long.append(f"{path.relative_to(REPO)}: {len(lines)} lines")
    assert not long, (
        "split these or give the one-line reason ('One file: ...') in the docstring:\n" + "\n".join(long)
    )


def import_cycles() -> list[list[str]]:
    """Groups of modules that import each other, directly or round a loop (Tarjan's strongly connected
    components over every import, lazy ones included)."""
    graph: dict[str, set[str]] = {}
    for path in source_files():
        deps = {dep for _, dep in project_imports(path)}
        graph[module_name(path)] = {d for d in deps if d != module_name(path)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue  # a package's __init__ named as a module path, or a name imported from one
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_no_two_modules_import_each_other():
    """A cycle (even through a lazy import) means two modules are one idea, or one sits in the wrong room."""
    cycles = import_cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)
