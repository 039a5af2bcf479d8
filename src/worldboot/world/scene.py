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
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
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


# --------------------------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """An object named by its attributes, as in "the red square"."""

    colour: str
    shape: str

    def phrase(self) -> str:
        return f"the {self.colour} {self.shape}"


@dataclass(frozen=True)
class Action:
    """A structured action.

    Attributes:
        family: One of :data:`FAMILIES`.
        kind: One of ``KINDS[family]``.
        obj: The object acted on (for ``add``: the new object).
        steps: Cells to move (``move`` only: 1 or 2).
        anchor: The reference object (``relation`` and ``add``).
        where: Where the new object goes relative to ``anchor`` (``add`` only; a relation).
        value: The new colour or size (``attribute``); the new object's size (``add``).
    """

    family: str
    kind: str
    obj: Ref
    steps: int = 0
    anchor: Ref | None = None
    where: str | None = None
    value: str | None = None

    @property
    def subset(self) -> str:
        return SUBSETS[self.family]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"family": self.family, "kind": self.kind, "obj": vars(self.obj).copy()}
        if self.steps:
            out["steps"] = self.steps
        if self.anchor is not None:
            out["anchor"] = vars(self.anchor).copy()
        for key in ("where", "value"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Action:
        """Inverse of :meth:`to_json`, checking every field.

        Raises:
            DataError: For missing or unknown fields and values.
        """
        try:
            anchor = data.get("anchor")
            action = cls(
                family=str(data["family"]),
                kind=str(data["kind"]),
                obj=Ref(str(data["obj"]["colour"]), str(data["obj"]["shape"])),
                steps=int(data.get("steps", 0)),
                anchor=Ref(str(anchor["colour"]), str(anchor["shape"])) if anchor else None,
                where=data.get("where"),
                value=data.get("value"),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"not a world action: {err!r}") from None
        problem = action_problem(action)
        if problem:
            raise DataError(f"not a world action: {problem}")
        return action


def action_problem(action: Action) -> str | None:
    """Why ``action`` is malformed regardless of any scene (None when well formed)."""
    if action.family not in KINDS or action.kind not in KINDS[action.family]:
        return f"unknown action {action.family}/{action.kind}"
    refs = [action.obj] + ([action.anchor] if action.anchor else [])
    for ref in refs:
        if ref.colour not in PALETTE or ref.shape not in SHAPES:
            return f"unknown object {ref.colour} {ref.shape}"
    f, k = action.family, action.kind
    if f == "move" and action.steps not in (1, 2):
        return "a move needs steps 1 or 2"
    if (f == "relation" or k == "add") and action.anchor is None:
        return f"{k} needs an anchor object"
    if k == "add" and (action.where not in RELATIONS or action.value not in SIZES):
        return "add needs where (a relation) and value (a size)"
    if k == "colour" and action.value not in PALETTE:
        return f"unknown colour {action.value}"
    if k == "size" and action.value not in SIZES:
        return f"unknown size {action.value}"
    return None


def _shift(cell: tuple[int, int], kind: str, times: int = 1) -> tuple[int, int]:
    dr, dc = OFFSETS[kind]
    return (cell[0] + dr * times, cell[1] + dc * times)


def _place(scene: Scene, obj: Obj | None, cell: tuple[int, int], what: str) -> str | None:
    """Why ``obj`` cannot go to ``cell`` (None when it can)."""
    if not scene.inside(cell):
        return f"{what} is off the table"
    other = scene.at(cell)
    if other is not None and other is not obj:
        return f"{what} is taken by the {other.colour} {other.shape}"
    return None


def _apply(scene: Scene, action: Action) -> Scene | str:
    """The next scene, or the reason the action is invalid here."""
    problem = action_problem(action)
    if problem:
        return problem
    f, k = action.family, action.kind
    others = [o for o in scene.objects]
    if k == "add":
        if scene.find(action.obj) is not None:
            return f"there already is {action.obj.phrase()}"
        if len(scene.objects) >= MAX_OBJECTS:
            return f"the table already holds {MAX_OBJECTS} objects"
        anchor = scene.find(action.anchor)
        if anchor is None:
            return f"no {action.anchor.phrase()[4:]} in the scene"
        cell = _shift(anchor.cell, action.where)
        why = _place(scene, None, cell, "the place for the new object")
        if why:
            return why
        new = Obj(action.obj.shape, action.obj.colour, action.value, *cell, _default_state(action.obj.shape))
        return Scene(tuple(others + [new]), scene.grid)
    obj = scene.find(action.obj)
    if obj is None:
        return f"no {action.obj.phrase()[4:]} in the scene"
    others.remove(obj)
    if f == "move":
        for i in range(1, action.steps + 1):
            why = _place(
                scene, obj, _shift(obj.cell, k, i), f"the cell {i} {'step' if i == 1 else 'steps'} {k}"
            )
            if why:
                return why
        new = replace(
            obj, row=obj.row + OFFSETS[k][0] * action.steps, col=obj.col + OFFSETS[k][1] * action.steps
        )
    elif k == "remove":
        if len(scene.objects) <= MIN_OBJECTS:
            return "the last object cannot be removed"
        return Scene(tuple(others), scene.grid)
    elif f == "relation":
        anchor = scene.find(action.anchor)
        if anchor is None:
            return f"no {action.anchor.phrase()[4:]} in the scene"
        if anchor is obj:
            return "an object cannot be placed relative to itself"
        cell = _shift(anchor.cell, k)
        if cell == obj.cell:
            return "the relation already holds"
        why = _place(scene, obj, cell, "that place")
        if why:
            return why
        new = replace(obj, row=cell[0], col=cell[1])
    elif k == "colour":
        if action.value == obj.colour:
            return f"it is already {obj.colour}"
        if scene.find(Ref(action.value, obj.shape)) is not None:
            return f"there already is a {action.value} {obj.shape}"
        new = replace(obj, colour=action.value)
    elif k == "size":
        if action.value == obj.size:
            return f"it is already {obj.size}"
        new = replace(obj, size=action.value)
    else:  # motion
        shape, before, after = MOTIONS[k]
        if obj.shape != shape or obj.state != before:
            return f"only a {before} {shape} can {k}"
        new = replace(obj, state=after)
    return Scene(tuple(others + [new]), scene.grid)


def apply(scene: Scene, action: Action) -> Scene:
    """The scene after ``action``.

    Raises:
        InvalidAction: When the action cannot happen in this scene (with the reason).
    """
    out = _apply(scene, action)
    if isinstance(out, str):
        raise InvalidAction(f"cannot {action.family}/{action.kind} the {action.obj.colour} {action.obj.shape}: {out}")
    return out


def why_invalid(scene: Scene, action: Action) -> str | None:
    """Why ``action`` cannot happen in ``scene`` (None when it can)."""
    out = _apply(scene, action)
    return out if isinstance(out, str) else None


def is_valid(scene: Scene, action: Action) -> bool:
    """Whether :func:`apply` would succeed."""
    return not isinstance(_apply(scene, action), str)


def candidate_actions(scene: Scene, family: str, rng: random.Random | None = None) -> list[Action]:
    """Every valid action of ``family`` in ``scene`` (for ``add``: one random new object per call
    when ``rng`` is given, every new object otherwise)."""
    if family not in KINDS:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    objs = scene.objects
    cands: list[Action] = []
    if family == "move":
        cands = [Action("move", k, o.ref, steps=s) for o in objs for k in KINDS["move"] for s in (1, 2)]
    elif family == "count":
        cands = [Action("count", "remove", o.ref) for o in objs]
        used = {o.ref for o in objs}
        new_refs = [Ref(c, s) for c in COLOURS for s in SHAPES if Ref(c, s) not in used]
        if rng is not None and new_refs:
            new_refs = [rng.choice(new_refs)]
        sizes = [rng.choice(SIZES)] if rng is not None else list(SIZES)
        cands += [
            Action("count", "add", ref, anchor=a.ref, where=w, value=size)
            for ref in new_refs
            for size in sizes
            for a in objs
            for w in RELATIONS
        ]
    elif family == "relation":
        cands = [
            Action("relation", k, o.ref, anchor=a.ref)
            for o in objs
            for a in objs
            if a is not o
            for k in RELATIONS
        ]
    elif family == "attribute":
        cands = [Action("attribute", "colour", o.ref, value=c) for o in objs for c in COLOURS]
        cands += [Action("attribute", "size", o.ref, value=s) for o in objs for s in SIZES]
    else:
        cands = [Action("motion", k, o.ref) for o in objs for k in KINDS["motion"]]
    return [a for a in cands if is_valid(scene, a)]


def sample_action(scene: Scene, family: str, rng: random.Random) -> Action | None:
    """A random valid action of ``family`` (a family name or its subset name) in ``scene``; None
    when there is none (e.g. ``motion`` in a scene without bottles or boxes).

    For ``count``, adding and removing are equally likely when both are possible.
    """
    family = family.removeprefix("world/")
    cands = candidate_actions(scene, family, rng)
    if family == "count":
        kinds = sorted({a.kind for a in cands})
        if kinds:
            kind = rng.choice(kinds)
            cands = [a for a in cands if a.kind == kind]
    return rng.choice(cands) if cands else None


def distractor_actions(scene: Scene, truth: Action, n: int, rng: random.Random) -> list[Action]:
    """Up to ``n`` other actions that can happen in ``scene``, for a multiple-choice question
    "which of these happened?": each of a random family, none leading to the scene ``truth``
    leads to (``put X on Y`` and ``move X further away`` can be the same change), no two
    alike. Fewer than ``n`` when the scene allows fewer."""
    want = apply(scene, truth)
    out: list[Action] = []
    for _ in range(20 * n):
        if len(out) == n:
            break
        action = sample_action(scene, rng.choice(FAMILIES), rng)
        if action is None or action == truth or action in out or apply(scene, action) == want:
            continue
        out.append(action)
    return out


def acted_on(action: Action) -> tuple[Ref | None, Ref | None]:
    """The acted-on object's name before and after the action (None before an ``add``; the new
    colour after a recolouring; None after a ``remove``)."""
    before = None if action.kind == "add" else action.obj
    if action.kind == "remove":
        return before, None
    after = Ref(action.value, action.obj.shape) if action.kind == "colour" else action.obj
    return before, after


__all__ = [
    "GRID",
    "MAX_OBJECTS",
    "TABLE",
    "PALETTE",
    "COLOURS",
    "SHAPES",
    "SIZES",
    "STATES",
    "SUBSETS",
    "FAMILIES",
    "KINDS",
    "InvalidAction",
    "Obj",
    "Scene",
    "Ref",
    "Action",
    "sample_scene",
    "apply",
    "is_valid",
    "why_invalid",
    "candidate_actions",
    "sample_action",
    "distractor_actions",
    "acted_on",
]
