"""The words of the procedural world: paraphrase templates, action texts, and their parser.

Every action kind has four paraphrased templates (:data:`TEMPLATES`); template 0 is the
canonical text, the label used for training and evaluation. :func:`parse_action` inverts
every template (after light normalisation: case, spaces, a final full stop, "color"), so a
dynamics model's predicted text can be scored by whether it names the true structured action.

Templates are regular enough to be parsed by one regular expression each, built from the
template itself: no hand-written grammar can drift from the generator.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from worldboot.world.actions import Action, action_problem
from worldboot.world.scene import COLOURS, SHAPES, SIZES, Ref

#: Slot vocabularies: slot -> {value -> words}. Values are move/relation kinds, steps or sizes.
SLOTS: dict[str, dict[Any, str]] = {
    "dir_a": {"left": "left", "right": "right", "up": "further away", "down": "closer"},
    "dir_b": {
        "left": "to the left",
        "right": "to the right",
        "up": "away from the camera",
        "down": "towards the camera",
    },
    "dir_c": {"left": "left", "right": "right", "up": "up", "down": "down"},
    "cells": {1: "one cell", 2: "two cells"},
    "steps": {1: "one step", 2: "two steps"},
    "spaces": {1: "one space", 2: "two spaces"},
    "rel_a": {
        "on": "on top of",
        "under": "underneath",
        "left_of": "to the left of",
        "right_of": "to the right of",
    },
    "rel_b": {"on": "on", "under": "below", "left_of": "left of", "right_of": "right of"},
    "colour": {c: c for c in COLOURS},
    "size_a": {"large": "bigger", "small": "smaller"},
    "size_b": {"large": "large", "small": "small"},
    "size_verb": {"large": "enlarge", "small": "shrink"},
}

#: Paraphrased templates per (family, kind) (kind None: shared by every kind of the family).
#: ``{obj}`` and ``{anchor}`` are "the <colour> <shape>", ``{new}`` is "a <size> <colour> <shape>".
TEMPLATES: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("move", None): (
        "move {obj} {dir_a} by {cells}",
        "push {obj} {steps} {dir_b}",
        "slide {obj} {spaces} {dir_c}",
        "shift {obj} {dir_b} by {steps}",
    ),
    ("count", "add"): (
        "add {new} {rel_a} {anchor}",
        "put {new} {rel_a} {anchor}",
        "place {new} {rel_b} {anchor}",
        "add one more object, {new}, {rel_b} {anchor}",
    ),
    ("count", "remove"): (
        "remove {obj}",
        "take away {obj}",
        "take {obj} off the table",
        "get rid of {obj}",
    ),
    ("relation", None): (
        "put {obj} {rel_a} {anchor}",
        "place {obj} {rel_b} {anchor}",
        "move {obj} so that it is {rel_b} {anchor}",
        "set {obj} down {rel_a} {anchor}",
    ),
    ("attribute", "colour"): (
        "make {obj} {colour}",
        "paint {obj} {colour}",
        "change the colour of {obj} to {colour}",
        "turn {obj} {colour}",
    ),
    ("attribute", "size"): (
        "make {obj} {size_a}",
        "{size_verb} {obj}",
        "change the size of {obj} to {size_b}",
        "resize {obj} so that it is {size_b}",
    ),
    ("motion", "fall"): (
        "knock over {obj}",
        "push {obj} so that it falls over",
        "tip {obj} over",
        "let {obj} fall on its side",
    ),
    ("motion", "stand"): (
        "stand {obj} up",
        "set {obj} upright",
        "lift {obj} back up",
        "put {obj} upright",
    ),
    ("motion", "open"): (
        "open {obj}",
        "take the lid off {obj}",
        "slide the lid off {obj}",
        "lift the lid of {obj}",
    ),
    ("motion", "close"): (
        "close {obj}",
        "put the lid back on {obj}",
        "shut {obj}",
        "cover {obj} with its lid",
    ),
}


def templates_for(action: Action) -> tuple[str, ...]:
    """The paraphrase templates of ``action``'s kind."""
    return TEMPLATES.get((action.family, action.kind)) or TEMPLATES[(action.family, None)]


def _slot_value(action: Action, slot: str) -> Any:
    if slot.startswith("dir_"):
        return action.kind
    if slot in ("cells", "steps", "spaces"):
        return action.steps
    if slot.startswith("rel_"):
        return action.where if action.kind == "add" else action.kind
    return action.value  # colour, size_*


def action_text(action: Action, template: int = 0) -> str:
    """``action`` in words using paraphrase ``template`` (0, the canonical text, to
    ``len(templates_for(action)) - 1``)."""
    problem = action_problem(action)
    if problem:
        raise ValueError(problem)
    temps = templates_for(action)
    text = temps[template % len(temps)]
    fills: dict[str, str] = {"obj": action.obj.phrase()}
    if action.anchor is not None:
        fills["anchor"] = action.anchor.phrase()
    if action.kind == "add":
        fills["new"] = f"a {action.value} {action.obj.colour} {action.obj.shape}"
    for slot in re.findall(r"{(\w+)}", text):
        if slot not in fills:
            fills[slot] = SLOTS[slot][_slot_value(action, slot)]
    return text.format(**fills)


def canonical_text(action: Action) -> str:
    """The one text per action used as its label (template 0)."""
    return action_text(action, 0)


def _alternation(words: list[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


@lru_cache(maxsize=1)
def _compiled() -> list[tuple[str, str | None, re.Pattern[str]]]:
    colour, shape = _alternation(list(COLOURS)), _alternation(list(SHAPES))
    groups = {
        "obj": f"the (?P<obj_colour>{colour}) (?P<obj_shape>{shape})",
        "anchor": f"the (?P<anchor_colour>{colour}) (?P<anchor_shape>{shape})",
        "new": f"an? (?P<new_size>{_alternation(list(SIZES))}) (?P<obj_colour>{colour}) (?P<obj_shape>{shape})",
    }
    out = []
    for (family, kind), temps in TEMPLATES.items():
        for text in temps:
            pattern = ""
            for literal, slot in re.findall(r"([^{]*)(?:{(\w+)})?", text):
                pattern += re.escape(literal)
                if slot:
                    pattern += groups.get(slot) or f"(?P<{slot}>{_alternation(list(SLOTS[slot].values()))})"
            out.append((family, kind, re.compile(pattern)))
    return out


def normalise_text(text: str) -> str:
    """Lower case, single spaces, no final full stop, British "colour"."""
    text = re.sub(r"\s+", " ", text.strip().lower()).rstrip(" .!")
    return re.sub(r"\bcolor\b", "colour", text)


def parse_action(text: str) -> Action | None:
    """The structured action a text written from any template describes, or None.

    Used to score a dynamics model's predicted action text against the true action.
    """
    norm = normalise_text(text)
    for family, kind, pattern in _compiled():
        m = pattern.fullmatch(norm)
        if not m:
            continue
        g = m.groupdict()
        values: dict[str, Any] = {}
        for slot, words in g.items():
            if slot in SLOTS and words is not None:
                values[slot] = next(v for v, w in SLOTS[slot].items() if w == words)
        direction = next((values[s] for s in values if s.startswith(("dir_", "rel_"))), None)
        steps = next((values[s] for s in ("cells", "steps", "spaces") if s in values), 0)
        value = next((values[s] for s in values if s == "colour" or s.startswith("size_")), None)
        anchor = Ref(g["anchor_colour"], g["anchor_shape"]) if g.get("anchor_colour") else None
        obj = Ref(g["obj_colour"], g["obj_shape"])
        if kind == "add":
            action = Action(family, "add", obj, anchor=anchor, where=direction, value=g["new_size"])
        elif kind is None:  # move and relation share templates across kinds
            action = Action(family, direction, obj, steps=steps, anchor=anchor)
        else:
            action = Action(family, kind, obj, anchor=anchor, value=value)
        if action_problem(action) is None:
            return action
    return None


def action_slots(action: Action) -> dict[str, Any]:
    """The parts of an action a description must get right: family, kind, the object's colour
    and shape, and whichever of steps, anchor, place and value the action has."""
    slots: dict[str, Any] = {
        "family": action.family,
        "kind": action.kind,
        "colour": action.obj.colour,
        "shape": action.obj.shape,
    }
    if action.steps:
        slots["steps"] = action.steps
    if action.anchor is not None:
        slots["anchor_colour"] = action.anchor.colour
        slots["anchor_shape"] = action.anchor.shape
    if action.where is not None:
        slots["where"] = action.where
    if action.value is not None:
        slots["value"] = action.value
    return slots


def slot_accuracy(text: str, truth: Action) -> float:
    """Partial credit for a predicted action text: the share of :func:`action_slots` of the
    true action that the parsed text gets right (0 when the text names no action).

    Exact-match accuracy is 0 until a model gets every word of an action right; this shows
    a dynamics model learning the parts first (which object, which kind of change).
    """
    pred = parse_action(text)
    if pred is None:
        return 0.0
    want, got = action_slots(truth), action_slots(pred)
    return sum(got.get(k) == v for k, v in want.items()) / len(want)
