"""The world's actions: a structured :class:`Action` per family, applying it to a scene (or saying why it cannot be), sampling valid ones, and distractors for multiple choice."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from worldboot.errors import DataError
from worldboot.world.scene import (
    COLOURS,
    FAMILIES,
    KINDS,
    MAX_OBJECTS,
    MIN_OBJECTS,
    MOTIONS,
    OFFSETS,
    PALETTE,
    RELATIONS,
    SHAPES,
    SIZES,
    SUBSETS,
    InvalidAction,
    Obj,
    Ref,
    Scene,
    _default_state,
)

# --------------------------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------------------------


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
