"""Imports flow one way: every ``worldboot`` module imports only from its own package or from a
package in a lower layer (module-level and lazy imports inside functions alike)."""

from __future__ import annotations

import ast
from pathlib import Path

import worldboot

#: Top to bottom. Within the stages, ``web`` (its play page runs a world model) and ``evaluate``
#: sit above ``infer``; the world's base builder makes a model, so ``world`` is above ``data``
#: (``tokenize`` runs the backbone's tokenizer) and ``models``.
LAYERS: list[set[str]] = [
    {"cli"},
    {"commands"},
    {"demo"},
    {"train", "mining", "evaluate", "web"},
    {"infer"},
    {"study"},
    {"world"},
    {"data"},
    {"models"},
    {"images", "stats", "progress", "ray_data"},
    {"runs"},
    {"config"},
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
