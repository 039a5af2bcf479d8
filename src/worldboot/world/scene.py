"""The procedural world: table-top scenes, actions on them, and the words for those actions.

This is worldboot's embedded default world: every stage can be tried on it without downloading
anything, and a tiny Chameleon (64x64 images, 8x8 VQ tokens) can learn its dynamics.

**Scenes.** A scene is a plain table seen from above-front, cut into a coarse ``GRID`` x ``GRID``
(4x4) grid of cells. Each cell holds at most one object, centred in it, so positions are
discrete and a generated image can be read back exactly (:func:`parse_scene`). An object has

* a shape: ``square``, ``circle``, ``triangle``, ``bottle`` (a bar that is ``upright`` or
  ``lying``) or ``box`` (a square frame that is ``closed`` or ``open``, i.e. missing its lid);
* a colour from six well separated saturated colours (:data:`PALETTE`);
* a size, ``small`` or ``large``;
* a cell ``(row, col)``; row 0 is the back of the table (the top of the image).

Within one scene an object is named by its colour and shape ("the red square"), which are
unique; a scene holds 1 to :data:`MAX_OBJECTS` objects.

**Actions** (:class:`Action`) come in five families that mirror AURORA's subsets:

* ``world/move`` (like Kubric): ``left``, ``right``, ``up`` (further away), ``down`` (closer),
  by 1 or 2 cells;
* ``world/count``: ``add`` a new object next to another one, ``remove`` one;
* ``world/relation`` (like WhatsUp): put an object ``on``, ``under``, ``left_of`` or
  ``right_of`` another;
* ``world/attribute`` (like MagicBrush): change an object's ``colour`` or ``size``;
* ``world/motion`` (like Something-Something): a bottle falls over (``fall``) or is set
  upright (``stand``); a box is opened (``open``) or closed (``close``).

"On" and "under" are modelled as adjacency in this 2-D view: "put X on Y" puts X in the cell
directly above Y. Every action has several paraphrased templates (:data:`TEMPLATES`);
:func:`action_text` writes one, :func:`parse_action` reads any of them back. :func:`apply`
executes an action and :func:`sample_action` draws only valid ones.

**Where the rest lives** (the package :mod:`worldboot.world` re-exports all of it, so
``from worldboot import world; world.render(...)`` works; this module imports none of them):

* :mod:`worldboot.world.text`: the paraphrase templates, :func:`action_text`,
  :func:`canonical_text` and :func:`parse_action`.
* :mod:`worldboot.world.render`: :func:`render` and the scene parser :func:`parse_scene`.
* :mod:`worldboot.world.gen`: :func:`generate_triplets` (PNG pairs + JSONL manifest) and
  :func:`generate_clips` (mp4 videos with smooth actions, one folder per class, Kinetics-like).
* :mod:`worldboot.world.judge`: :func:`judge`, an automatic counterpart of the GPT-4o
  judge (editing success and minimal editing, 0-10 each).

Example::

    import random
    from worldboot import world

    rng = random.Random(0)
    scene = world.sample_scene(rng)
    action = world.sample_action(scene, "move", rng)
    print(world.action_text(action, template=2))       # e.g. "slide the red box one space up"
    target = world.apply(scene, action)
    world.render(target).save("target.png")
    assert world.parse_scene(world.render(target)) == target

The actions (what each family does to a scene) are :mod:`worldboot.world.actions`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from worldboot.errors import DataError

# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

#: Cells per side of the table.
GRID = 4
#: Most objects a scene holds (so that a tiny model sees uncluttered scenes).
MAX_OBJECTS = 4
#: Fewest objects a scene holds (``remove`` never empties the table).
MIN_OBJECTS = 1

#: The table (background) colour: an off-white far from every object colour, and brighter than
#: all of them, because video codecs blur colour more than brightness (yellow on a beige table
#: lost its edges in mp4s).
TABLE = (250, 246, 236)
#: Object colours; the smallest distance between any two of them and the table is 132 in RGB.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 230),
    "yellow": (230, 190, 0),
    "purple": (150, 40, 180),
    "cyan": (0, 200, 220),
}
COLOURS = tuple(PALETTE)
SHAPES = ("square", "circle", "triangle", "bottle", "box")
SIZES = ("small", "large")
#: Shapes with a state, and their states (the first is the default, e.g. for added objects).
STATES: dict[str, tuple[str, str]] = {"bottle": ("upright", "lying"), "box": ("closed", "open")}

#: Family name -> AURORA-like subset name.
SUBSETS = {f: f"world/{f}" for f in ("move", "count", "relation", "attribute", "motion")}
FAMILIES = tuple(SUBSETS)
#: Kinds of action per family.
KINDS: dict[str, tuple[str, ...]] = {
    "move": ("left", "right", "up", "down"),
    "count": ("add", "remove"),
    "relation": ("on", "under", "left_of", "right_of"),
    "attribute": ("colour", "size"),
    "motion": ("fall", "stand", "open", "close"),
}
#: Cell offsets (drow, dcol) of moves and of "X <relation> Y" (X's cell minus Y's cell).
OFFSETS: dict[str, tuple[int, int]] = {
    "left": (0, -1),
    "right": (0, 1),
    "up": (-1, 0),
    "down": (1, 0),
    "on": (-1, 0),
    "under": (1, 0),
    "left_of": (0, -1),
    "right_of": (0, 1),
}
RELATIONS = KINDS["relation"]
#: Motion kind -> (shape, state before, state after).
MOTIONS: dict[str, tuple[str, str, str]] = {
    "fall": ("bottle", "upright", "lying"),
    "stand": ("bottle", "lying", "upright"),
    "open": ("box", "closed", "open"),
    "close": ("box", "open", "closed"),
}


class InvalidAction(DataError):
    """An action that cannot be applied to a scene (missing object, occupied or outside cell...)."""


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Obj:
    """One object on the table.

    Attributes:
        shape: One of :data:`SHAPES`.
        colour: One of :data:`COLOURS`.
        size: ``small`` or ``large``.
        row: Grid row, 0 at the back (top of the image).
        col: Grid column, 0 on the left.
        state: ``upright``/``lying`` for bottles, ``closed``/``open`` for boxes, None otherwise.
    """

    shape: str
    colour: str
    size: str
    row: int
    col: int
    state: str | None = None

    @property
    def cell(self) -> tuple[int, int]:
        return (self.row, self.col)

    @property
    def ref(self) -> Ref:
        """How actions name this object."""
        return Ref(self.colour, self.shape)

    def describe(self) -> str:
        state = f"{self.state} " if self.state else ""
        return f"{self.size} {state}{self.colour} {self.shape} at ({self.row}, {self.col})"


@dataclass(frozen=True)
class Scene:
    """A table with objects; objects are kept sorted by cell, so equal scenes compare equal.

    Attributes:
        objects: The objects (any order in, sorted by (row, col) after construction).
        grid: Cells per side.
    """

    objects: tuple[Obj, ...] = ()
    grid: int = GRID

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(sorted(self.objects, key=lambda o: (o.row, o.col))))

    def find(self, ref: Ref) -> Obj | None:
        """The object named by ``ref`` (the first, if a parsed scene holds several)."""
        return next((o for o in self.objects if o.colour == ref.colour and o.shape == ref.shape), None)

    def at(self, cell: tuple[int, int]) -> Obj | None:
        """The object in ``cell``, if any."""
        return next((o for o in self.objects if o.cell == cell), None)

    def inside(self, cell: tuple[int, int]) -> bool:
        return 0 <= cell[0] < self.grid and 0 <= cell[1] < self.grid

    def problems(self) -> list[str]:
        """Why this scene breaks the world's rules (empty when it is valid)."""
        out = []
        cells = [o.cell for o in self.objects]
        refs = [o.ref for o in self.objects]
        if len(set(cells)) != len(cells):
            out.append("two objects share a cell")
        if len(set(refs)) != len(refs):
            out.append("two objects share colour and shape")
        if not MIN_OBJECTS <= len(self.objects) <= MAX_OBJECTS:
            out.append(f"{len(self.objects)} objects (allowed {MIN_OBJECTS}-{MAX_OBJECTS})")
        for o in self.objects:
            if o.shape not in SHAPES or o.colour not in PALETTE or o.size not in SIZES:
                out.append(f"unknown attribute in {o}")
            elif not self.inside(o.cell):
                out.append(f"{o.describe()} is off the table")
            elif o.state not in STATES.get(o.shape, (None,)):
                out.append(f"bad state {o.state!r} for a {o.shape}")
        return out

    def describe(self) -> str:
        """One line per object, for logs and error messages."""
        return "; ".join(o.describe() for o in self.objects) or "empty table"

    def to_json(self) -> dict[str, Any]:
        return {"grid": self.grid, "objects": [vars(o).copy() for o in self.objects]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scene:
        """Inverse of :meth:`to_json`.

        Raises:
            DataError: When fields are missing or unknown.
        """
        try:
            objects = tuple(
                Obj(
                    shape=str(o["shape"]),
                    colour=str(o["colour"]),
                    size=str(o["size"]),
                    row=int(o["row"]),
                    col=int(o["col"]),
                    state=o.get("state"),
                )
                for o in data["objects"]
            )
            return cls(objects=objects, grid=int(data.get("grid", GRID)))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"not a world scene: {err!r}") from None


def _default_state(shape: str) -> str | None:
    return STATES[shape][0] if shape in STATES else None


def sample_scene(
    rng: random.Random, n_objects: int | None = None, grid: int = GRID, shapes: tuple[str, ...] = SHAPES
) -> Scene:
    """A random valid scene: ``n_objects`` (default 2-4) objects with unique colour+shape, in
    distinct cells, random sizes and states."""
    n = n_objects if n_objects is not None else rng.randint(2, MAX_OBJECTS)
    if not MIN_OBJECTS <= n <= min(MAX_OBJECTS, grid * grid):
        raise ValueError(f"n_objects must be in {MIN_OBJECTS}..{MAX_OBJECTS}, got {n}")
    cells = rng.sample([(r, c) for r in range(grid) for c in range(grid)], n)
    refs = rng.sample([(c, s) for c in COLOURS for s in shapes], n)
    objects = []
    for (row, col), (colour, shape) in zip(cells, refs, strict=True):
        state = rng.choice(STATES[shape]) if shape in STATES else None
        objects.append(Obj(shape, colour, rng.choice(SIZES), row, col, state))
    return Scene(tuple(objects), grid)


@dataclass(frozen=True)
class Ref:
    """An object named by its attributes, as in "the red square"."""

    colour: str
    shape: str

    def phrase(self) -> str:
        return f"the {self.colour} {self.shape}"
