"""The package's shape as a reader relies on it: what it imports, from where, and in which direction.

Every import of ``service/`` is read with ``ast`` (at any depth: inside functions and
``TYPE_CHECKING`` blocks too), so a dependency dodged into a function still counts.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "service"
PYPROJECT = ROOT / "pyproject.toml"


@dataclass(frozen=True)
class Import:
    """One imported name as written in ``source`` (a module of service/), made absolute."""

    source: str
    target: str
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def package_modules() -> dict[str, Path]:
    """Every module of service/ by dotted name; the C scanner counts as a module of its own."""
    modules = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    modules["service._scan"] = PACKAGE / "_scan.c"
    modules["service._detect"] = PACKAGE / "_detect.c"
    modules["service._fields"] = PACKAGE / "_fields.c"
    return modules


def _absolute_base(source: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = source.split(".") if is_package else source.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


def imports_in(source: str, path: Path) -> Iterator[Import]:
    """Absolute names imported by one module; ``from x import y`` yields ``x.y`` (a submodule
    or an attribute: resolve_internal and distribution_of tell which)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(source, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute_base(source, path.name == "__init__.py", node)
            for alias in node.names:
                yield Import(source, f"{base}.{alias.name}", node.lineno)


@cache
def all_imports() -> tuple[Import, ...]:
    return tuple(
        imp
        for name, path in package_modules().items()
        if path.suffix == ".py"
        for imp in imports_in(name, path)
    )


def resolve_internal(target: str) -> str | None:
    """The module of service/ that importing ``target`` loads, or None for outside names."""
    if target.partition(".")[0] != "service":
        return None
    modules = package_modules()
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def _canonical(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return _canonical(match.group())


def _module_origin(name: str) -> Path | None:
    """The file (or package directory) ``name`` loads from; None when it is no module."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a parent is no package: ``name`` is an attribute
        return None
    if spec is None:
        return None
    if spec.origin and spec.origin not in {"built-in", "frozen"}:
        return Path(spec.origin).resolve()
    locations = list(spec.submodule_search_locations or [])
    return Path(locations[0]).resolve() if locations else None


@cache
def _packages_distributions() -> Mapping[str, list[str]]:
    """Top-level module -> distributions (a scan of every installed RECORD: read once)."""
    return importlib.metadata.packages_distributions()


@cache
def distribution_of(target: str) -> str:
    """The installed distribution that provides the module loaded by importing ``target``.

    Namespace packages (``google``, ``opentelemetry``) are shared by several distributions,
    so the module's own file decides, not its top-level name."""
    top = target.partition(".")[0]
    candidates = sorted(set(_packages_distributions().get(top, [])))
    assert candidates, f"{target}: not installed in this environment"
    if len(candidates) == 1:
        return _canonical(candidates[0])
    name = target
    while name and (origin := _module_origin(name)) is None:
        name = name.rpartition(".")[0]
    for candidate in candidates:
        dist = importlib.metadata.distribution(candidate)
        for file in dist.files or []:
            located = Path(str(dist.locate_file(file))).resolve()
            if origin in {located, located.parent}:
                return _canonical(candidate)
    raise AssertionError(f"{target}: no distribution of {candidates} holds {origin}")


def third_party_imports() -> Iterator[tuple[Import, str]]:
    """(import, distribution) for every import of service/ that is neither stdlib nor ours."""
    for imp in all_imports():
        top = imp.target.partition(".")[0]
        if top == "service" or top in sys.stdlib_module_names:
            continue
        yield imp, distribution_of(imp.target)


def declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    runtime = {_requirement_name(r) for r in project["dependencies"]}
    extras = {
        extra: {_requirement_name(r) for r in requirements}
        for extra, requirements in project.get("optional-dependencies", {}).items()
    }
    return runtime, extras


def _where(imp: Import) -> str:
    return f"{package_modules()[imp.source].relative_to(ROOT)}:{imp.line} {imp.target}"


# ------------------------------------------------------------------ dependencies


def test_every_third_party_import_is_a_declared_runtime_dependency() -> None:
    runtime, extras = declared()
    undeclared = [
        f"{_where(imp)} -> {dist}"
        for imp, dist in third_party_imports()
        if dist not in runtime
        # The embedded AWS emulator is the `demo` extra, loaded by service.local alone.
        and not (imp.source == "service.local" and dist in extras.get("demo", set()))
    ]
    assert not undeclared, "imported but not in [project] dependencies:\n" + "\n".join(undeclared)


def test_every_runtime_dependency_is_imported_by_the_package() -> None:
    runtime, _ = declared()
    imported = {dist for _, dist in third_party_imports()}
    assert runtime <= imported, f"declared but never imported: {sorted(runtime - imported)}"


def test_the_demo_extra_is_loaded_only_by_local_and_local_only_by_the_demo() -> None:
    runtime, extras = declared()
    # The extra also widens a runtime dependency (pyiceberg's SQLite catalog): that one is not
    # the demo's to load.
    demo = extras["demo"] - runtime
    assert {imp.source for imp, dist in third_party_imports() if dist in demo} == {"service.local"}
    local_users = {
        imp.source for imp in all_imports() if resolve_internal(imp.target) == "service.local"
    }
    assert local_users == {"service.demo"}


# ------------------------------------------------------------------ import graph


def internal_edges() -> dict[str, dict[str, Import]]:
    """source module -> {target module: the first import that makes the edge}."""
    edges: dict[str, dict[str, Import]] = {name: {} for name in package_modules()}
    for imp in all_imports():
        target = resolve_internal(imp.target)
        if target is not None and target != imp.source:
            edges[imp.source].setdefault(target, imp)
    return edges


def strongly_connected(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's components of more than one module (the import cycles), in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def one_cycle(component: list[str], edges: dict[str, dict[str, Import]]) -> list[str]:
    """A shortest cycle through the component's first module, as modules from start to start."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(edges[node]):
                if succ == start:
                    return [*paths[node], start]
                if succ in members and succ not in paths:
                    paths[succ] = [*paths[node], succ]
                    following.append(succ)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def test_the_package_has_no_import_cycle() -> None:
    edges = internal_edges()
    reports = []
    for component in strongly_connected(edges):
        cycle = one_cycle(component, edges)
        steps = [_where(edges[a][b]) for a, b in pairwise(cycle)]
        reports.append(
            f"cycle among {', '.join(component)}:\n  "
            + " -> ".join(cycle)
            + "\n    "
            + "\n    ".join(steps)
        )
    assert not reports, "\n".join(reports)


# ------------------------------------------------------------------ module size

MAX_MODULE_LINES = 400
# The C scanner is one translation unit on purpose (docs/writer.md).
LONG_BY_DESIGN = {PACKAGE / "_scan.c"}


def test_no_module_is_over_400_lines() -> None:
    sources = sorted(p for p in PACKAGE.rglob("*") if p.suffix in {".py", ".pyi", ".c", ".h"})
    long = {
        str(p.relative_to(ROOT)): n
        for p in sources
        if p not in LONG_BY_DESIGN and (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


# ------------------------------------------------------------------ layers

# Lowest first; a module may import its own layer and the ones below, never one above.
LAYERS: list[set[str]] = [
    {
        "",
        "errors",
        "schema",
        "envelope",
        "aws",
        "settings",
        "local",
        "loggen",
        "_scan",
        "_detect",
        "_fields",
        "scanner",
    },
    {"decode"},
    {"pipeline"},  # pure, columnar: the sink runs a flush's rows through it (DESIGN §12)
    {"sink"},
    {"telemetry"},
    {"ingest", "consume"},
    {"resources", "compaction"},
    {"repair"},  # redrive and replay: above the consumer whose parts they reuse
    {"console"},
    {"demo"},
    {"cli", "__main__"},
]
# Telemetry takes plain values: it sits above the sink but imports only the bottom layer.
ONLY_FROM_BOTTOM = {"telemetry"}
# The two services share the lower layers, never each other.
APART = [{"ingest", "consume"}]


def part_of(module: str) -> str:
    """``service.sink.columns`` -> ``sink``; the package itself -> ``""``."""
    return module.removeprefix("service").lstrip(".").partition(".")[0]


def layer_of(module: str) -> int:
    part = part_of(module)
    for level, parts in enumerate(LAYERS):
        if part in parts:
            return level
    raise AssertionError(f"{module}: in no layer; add {part!r} to LAYERS")


def test_every_module_has_a_layer() -> None:
    for module in package_modules():
        layer_of(module)


def test_imports_run_from_higher_layers_to_lower_ones_only() -> None:
    wrong = []
    for source, targets in internal_edges().items():
        src = part_of(source)
        for target, imp in targets.items():
            dst = part_of(target)
            if src == dst:
                continue
            if layer_of(target) > layer_of(source):
                wrong.append(f"{_where(imp)}: {src or 'service'} imports higher layer {dst}")
            elif src in ONLY_FROM_BOTTOM and layer_of(target) > 0:
                wrong.append(f"{_where(imp)}: {src} takes plain values, imports {dst}")
            elif any({src, dst} == pair for pair in APART):
                wrong.append(f"{_where(imp)}: {src} and {dst} must not import each other")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_the_walker_sees_relative_imports_and_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "columns.py"
    module.write_text(
        "from . import native\n"
        "from ..decode.types import LineBatch\n"
        "def build():\n"
        "    from .mapping import FieldMapping\n"
        "    if True:\n"
        "        import service.schema as schema\n"
    )
    targets = {imp.target for imp in imports_in("service.sink.columns", module)}
    assert targets == {
        "service.sink.native",
        "service.decode.types.LineBatch",
        "service.sink.mapping.FieldMapping",
        "service.schema",
    }
    assert resolve_internal("service.sink.mapping.FieldMapping") == "service.sink.mapping"
    assert resolve_internal("service.decode.types.LineBatch") == "service.decode.types"
    assert resolve_internal("orjson.dumps") is None
