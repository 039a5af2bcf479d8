"""Imports flow one way: every ``worldboot`` module imports only from its own package or from a
package in a lower layer (module-level and lazy imports inside functions alike)."""

from __future__ import annotations

import ast
from pathlib import Path

import worldboot

#: Top to bottom, as DESIGN.md section 2 has it. ``base`` (the world's foundation model: it
#: trains one, with torch) sits just below ``demo``. Within the stages, ``web`` (its play page
#: runs a world model) and ``evaluate`` sit above ``infer``. ``world`` is data and rules and
#: imports no model, but it writes and judges ``data.schema`` triplets, so it stays above
#: ``data`` (``tokenize`` runs the backbone's tokenizer) and ``models``.
LAYERS: list[set[str]] = [
    {"cli"},
    {"commands"},
    {"demo"},
    {"base"},
    {"train", "mining", "evaluate", "web"},
    {"infer"},
    {"study"},
    {"world"},
    {"data"},
    {"models"},
    {"images", "stats", "ray_data"},
    {"progress"},
    {"runs"},
    {"run_guards"},
    {"config"},
    {"bounds"},
    {"errors"},
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
ROOT = Path(worldboot.__file__).parent


def _imports(path: Path) -> set[str]:
    """The top-level ``worldboot`` packages that ``path`` imports from."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "worldboot":
                continue
            out.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names if a.name != "__version__"])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("worldboot."))
    return out


def _package(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def test_every_package_has_a_layer():
    packages = {_package(p) for p in ROOT.rglob("*.py")} - {"__init__"}
    assert packages <= set(RANK), sorted(packages - set(RANK))


def test_imports_go_down_the_layers():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        src = _package(path)
        if src == "__init__":
            continue
        for dst in _imports(path):
            if dst != src and RANK[dst] <= RANK[src]:
                wrong.append(f"{path.relative_to(ROOT)} imports worldboot.{dst}")
    assert not wrong, wrong


def test_the_check_sees_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from worldboot.demo.config import DemoConfig\n    import worldboot.web.app\n")
    assert _imports(f) == {"demo", "web"}


#: Libraries that are torch or import it.
TORCH = {"torch", "torchvision", "transformers", "peft", "accelerate", "deepspeed", "bitsandbytes"}


def _module_imports(path: Path, lazy: bool = True) -> set[str]:
    """The modules ``path`` imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``, since
    ``c`` may be a module): inside functions too where ``lazy``, else only those that run when
    ``path`` is imported."""
    out: set[str] = set()
    todo: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        if lazy or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))
    return out


def _source(module: str) -> list[Path]:
    """The files that importing ``module`` (a ``worldboot`` module) runs: its parents'
    ``__init__.py`` and its own file; empty where it is no module (a name in one)."""
    parts = module.split(".")[1:]
    mod = ROOT.joinpath(*parts)
    own = mod / "__init__.py" if mod.is_dir() else mod.with_suffix(".py")
    if not own.is_file():
        return []
    return [ROOT.joinpath(*parts[:i], "__init__.py") for i in range(len(parts))] + [own]


def _label(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def _torch_imports(path: Path) -> list[str]:
    """How ``path`` reaches torch: its own imports, module-level and lazy alike, then what the
    ``worldboot`` modules among them import when imported (one ``a -> b -> torch`` chain a way).
    A lazy import in such a module (``runs.distributed_shard``) runs only for its caller."""
    chains, seen, todo = [], {path}, [(path, _label(path), True)]
    while todo:
        file, chain, lazy = todo.pop()
        for name in sorted(_module_imports(file, lazy)):
            top = name.split(".")[0]
            if top in TORCH:
                chains.append(f"{chain} -> {name}")
            elif top == "worldboot":
                for dep in _source(name):
                    if dep not in seen:
                        seen.add(dep)
                        todo.append((dep, f"{chain} -> {_label(dep)}", False))
    return sorted(set(chains))


def test_world_imports_no_torch():
    """The world is data and rules: no module of ``worldboot.world`` imports torch or a library
    built on it, lazily or not, nor a ``worldboot`` module that does when imported."""
    wrong = [c for path in sorted((ROOT / "world").rglob("*.py")) for c in _torch_imports(path)]
    assert not wrong, wrong


def test_the_torch_check_sees_lazy_and_indirect_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    import torch.nn\n")
    assert _torch_imports(f) == ["m.py -> torch.nn"]
    g = tmp_path / "g.py"
    g.write_text("def g():\n    from worldboot.base import get_world_base\n")
    assert any(c.endswith(" -> torch") for c in _torch_imports(g)), "worldboot.base trains with torch"
    h = tmp_path / "h.py"
    h.write_text("from worldboot.world import render\nimport numpy\n")
    assert _torch_imports(h) == []


#: Module pairs whose circle another change breaks (issue 39 item 4): remove each pair once
#: the two modules no longer import each other.
CIRCLES_BEING_BROKEN: set[frozenset[str]] = set()


def _module_file(module: str, root: Path) -> Path | None:
    """The file of ``module`` (a ``worldboot`` module) under ``root``; None for a name in one."""
    mod = root.joinpath(*module.split(".")[1:])
    for own in (mod / "__init__.py", mod.with_suffix(".py")):
        if own.is_file():
            return own
    return None


def _package_imports(root: Path) -> dict[str, set[str]]:
    """Each module under ``root`` (as ``pkg/mod.py``) -> the modules of its own package that it
    imports, at module level, lazily or under ``TYPE_CHECKING``."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if len(rel.parts) < 2:
            continue
        files = {_module_file(name, root) for name in _module_imports(path) if name.startswith("worldboot.")}
        own = {f.relative_to(root) for f in files if f and f != path}
        graph[rel.as_posix()] = {f.as_posix() for f in own if f.parts[0] == rel.parts[0]}
    return graph


def _circles(graph: dict[str, set[str]], exempt: set[frozenset[str]] = frozenset()) -> list[list[str]]:
    """The circles of ``graph`` (each its modules that reach one another, sorted), leaving out
    the imports between an ``exempt`` pair."""
    edges = {a: {b for b in bs if frozenset({a, b}) not in exempt} for a, bs in graph.items()}

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for b in edges.get(todo.pop(), ()):
                if b not in seen:
                    seen.add(b)
                    todo.append(b)
        return seen

    reached = {a: reach(a) for a in edges}
    circles = {tuple(sorted({a} | {b for b in reached[a] if a in reached[b]})) for a in edges if a in reached[a]}
    return sorted(list(c) for c in circles)


def test_no_circle_inside_a_package():
    """No module imports (directly, lazily or through others of its package) a module of its own
    package that imports it back: shared code moves to a module both import."""
    circles = _circles(_package_imports(ROOT), CIRCLES_BEING_BROKEN)
    assert not circles, circles


def test_the_circle_check_sees_lazy_and_indirect_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from worldboot.pkg.b import B\n")
    (pkg / "b.py").write_text("def f():\n    import worldboot.pkg.c\n")
    (pkg / "c.py").write_text("from worldboot.pkg import a\nfrom worldboot.pkg.d import D\n")
    (pkg / "d.py").write_text("from worldboot.runs import RunDir\n")
    graph = _package_imports(tmp_path)
    assert graph["pkg/c.py"] == {"pkg/__init__.py", "pkg/a.py", "pkg/d.py"}
    assert _circles(graph) == [["pkg/a.py", "pkg/b.py", "pkg/c.py"]]
    assert _circles(graph, {frozenset({"pkg/a.py", "pkg/b.py"})}) == []
