"""What each token patch of a rendered scene shows: the codes the world base's tokenizer learns.

The renderer knows what it drew in every cell, so the tokenizer of the world's foundation model
(:mod:`worldboot.base`) need not invent its codes: each token patch is named by the drawing
it holds and which part of it (:func:`patch_codes`), and the VQ model is trained to give exactly
those codes and to draw them back.
"""

from __future__ import annotations

import numpy as np

from worldboot.world.scene import PALETTE, SHAPES, SIZES, STATES, Obj, Scene

#: Every drawing a cell can hold: ``None`` (the bare table) first, then each shape x state x
#: colour x size, in a fixed order. The world base's tokenizer learns to give every token
#: patch the code of what the renderer drew there (:func:`patch_codes`).
CELL_KINDS: tuple[tuple[str, str | None, str, str] | None, ...] = (
    None,
    *(
        (shape, state, colour, size)
        for shape in SHAPES
        for state in STATES.get(shape, (None,))
        for colour in PALETTE
        for size in SIZES
    ),
)
_CELL_INDEX = {kind: i for i, kind in enumerate(CELL_KINDS)}


def cell_kind(obj: Obj | None) -> int:
    """The index in :data:`CELL_KINDS` of what a cell holding ``obj`` (or nothing) shows."""
    if obj is None:
        return 0
    return _CELL_INDEX[(obj.shape, obj.state, obj.colour, obj.size)]


def patch_code_count(per_cell: int) -> int:
    """How many codes :func:`patch_codes` uses with ``per_cell`` x ``per_cell`` patches a cell."""
    return 1 + (len(CELL_KINDS) - 1) * per_cell**2


def code_meaning(code: int, per_cell: int) -> tuple[tuple[str, str | None, str, str] | None, int]:
    """What code ``code`` of :func:`patch_codes` shows: its drawing (``(shape, state, colour,
    size)``, or None for the bare table) and which patch of the cell it is (row-major, 0 for
    the bare table)."""
    if not 0 <= code < patch_code_count(per_cell):
        raise ValueError(f"code {code} is not one of the {patch_code_count(per_cell)} patch codes")
    if code == 0:
        return None, 0
    kind, part = divmod(code - 1, per_cell * per_cell)
    return CELL_KINDS[kind + 1], part


def patch_codes(scene: Scene, per_cell: int) -> np.ndarray:
    """``[grid * per_cell, grid * per_cell]`` int64: the code of every token patch of ``scene``.

    A cell is cut into ``per_cell`` x ``per_cell`` patches. Every patch of a bare cell has code
    0; patch ``(i, j)`` of a cell showing kind ``k`` has code ``1 + (k - 1) * per_cell**2 +
    i * per_cell + j``, so a code says what is drawn *and* which part of it: a decoder can draw
    a code without looking at its neighbours.
    """
    n = scene.grid * per_cell
    codes = np.zeros((n, n), dtype=np.int64)
    sub = np.arange(per_cell * per_cell).reshape(per_cell, per_cell)
    for obj in scene.objects:
        r, c = obj.row * per_cell, obj.col * per_cell
        codes[r : r + per_cell, c : c + per_cell] = 1 + (cell_kind(obj) - 1) * per_cell**2 + sub
    return codes
