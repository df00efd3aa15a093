"""The shape of the code: no import circles in coordlib, and the library never prints."""

from __future__ import annotations

import ast
import gc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "coordlib"


def parse(f: Path) -> ast.Module:
    """ast.parse, with the garbage collector held off.  Debian's Python 3.11.2 keeps the AST
    constructor's recursion depth in one place per interpreter (CPython gh-106905, fixed in
    3.11.5): a finalizer the collector runs while the tree is built can let another thread
    (a test's leftover server) parse too, and the check trips "AST constructor recursion
    depth mismatch".  With no collection, nothing runs Python code in between."""
    was = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(f.read_text())
    finally:
        if was:
            gc.enable()


def _imports() -> dict[str, set[str]]:
    """Map each coordlib module to the coordlib modules it imports (at any depth, any time)."""
    mods: dict[str, set[str]] = {}
    for f in ROOT.rglob("*.py"):
        name = ".".join(f.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        package = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(parse(f)):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base.startswith("coordlib"):
                    deps.add(base)
                    deps.update(f"{base}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("coordlib"))
        mods[name] = deps
    return {
        m: {
            d
            for d in deps
            if d in mods and d != m and not m.startswith(d + ".") and d != "coordlib"
        }
        for m, deps in mods.items()
    }


def test_no_module_of_coordlib_imports_one_that_imports_it_back() -> None:
    graph = _imports()
    circles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            circles.append([*path[path.index(m) :], m])
            return
        for d in sorted(graph.get(m, ())):
            visit(d, [*path, m])

    for m in sorted(graph):
        visit(m, [])
    assert circles == [], "import circles: " + "; ".join(" -> ".join(c) for c in circles[:5])


def test_the_library_never_prints_nor_imports_click() -> None:
    for f in ROOT.rglob("*.py"):
        if "testing" in f.parts:
            continue  # the test helpers' `python -m` entry points print
        tree = parse(f)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                raise AssertionError(f"{f}:{node.lineno} calls print()")
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                assert not any(n.split(".")[0] == "click" for n in names), f"{f} imports click"


def test_the_config_cache_is_keyed_by_every_module_of_the_parser() -> None:
    """A changed parser must parse again: the cache key hashes the parser's own files."""
    from coordlib.config_load import _PARSER_MODULES

    graph = _imports()
    parser = {"coordlib.config_yaml", *graph["coordlib.config_yaml"]} - {"coordlib.errors"}
    assert {f"{m.rsplit('.', 1)[1]}.py" for m in parser} <= set(_PARSER_MODULES)
