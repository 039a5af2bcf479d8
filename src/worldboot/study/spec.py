"""A blind human-evaluation study: items, the models' outputs, and each annotator's view of them.

A study is a YAML file (see ``configs/web/example_study.yaml``)::

    name: aurora-human            # votes databases belong to one study (checked)
    title: Which next observation is best?
    instructions: ...             # shown on the login page
    root: .                       # every path is resolved under it (default: the YAML's folder)
    seed: 0                       # seeds the per-annotator shuffles
    shuffle_items: false          # true: each annotator sees the items in their own order
    reference: CWM                # the model the analysis tests the others against (default: last)
    items:                        # or `manifest: bench.jsonl` (a worldboot triplet manifest)
      - {id: mb-0, subset: magicbrush, source: sources/mb-0.png, action: add a hat}
    models:
      GoT: outputs/got            # a folder holding <item id>.png (or .jpg/.jpeg/.webp)
      SE: {dir: outputs/se, pattern: "{id}/edit.png"}
      CWM: {paths: {mb-0: cwm/first.png}}

Every path must stay under ``root``, and item ids are restricted to ``[A-Za-z0-9._-]``: the
web app serves images by item id and slot only, never by a path from a request. Items with a
bad entry or a missing output are skipped and counted in ``Study.problems`` (or stop the
load in strict mode): a blind comparison needs every model's output on every item. A key the
study or an item does not know (``subst: table``) is refused with its line, never ignored.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from worldboot.config import read_utf8, yaml_error
from worldboot.data.schema import Problems, read_manifest, resolve_under, wrong_types
from worldboot.errors import ConfigError, DataError, resolve_path, unless_loop
from worldboot.study.keys import LINE, LineLoader, check_study_keys, clean
from worldboot.study.keys import where as key_place
from worldboot.study.outputs import ModelSpec, check_image, item_outputs, model_specs

#: Item ids and annotator ids: safe in URLs, file names and CSV cells.
ITEM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ANNOTATOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
STUDY_KEYS = {
    "name",
    "title",
    "instructions",
    "root",
    "seed",
    "shuffle_items",
    "reference",
    "items",
    "manifest",
    "models",
}
#: The keys of an entry of ``items:`` (another is a typo: ``subst: table`` would land in ``default``).
ITEM_KEYS = ("id", "subset", "source", "action")
DEFAULT_INSTRUCTIONS = (
    "Each page shows a source image, an action, and the next observation predicted by several "
    "systems, in a random order. Mark the best and the worst prediction, judging: (1) realism: "
    "natural textures and lighting, faithful to the source scene; (2) instruction following: "
    "the change clearly shows the action; (3) over-editing: only what the action needs changes."
)
@dataclass
class StudyItem:
    """One item of the study.

    Attributes:
        id: Unique id (``[A-Za-z0-9._-]``).
        subset: e.g. ``magicbrush``; the analysis reports one row per subset.
        action: The action text shown to the annotator.
        source: Absolute path of the source observation.
        outputs: Model name -> absolute path of that model's predicted observation.
    """

    id: str
    subset: str
    action: str
    source: Path
    outputs: dict[str, Path]


@dataclass
class Study:
    """A loaded study (see the module docstring for the YAML).

    Attributes:
        name: Identifies the study in its votes database.
        title: Shown on every page.
        instructions: Shown on the login page.
        root: Folder every path is resolved under.
        seed: Seeds the per-annotator shuffles.
        shuffle_items: Whether each annotator gets their own item order.
        reference: Default reference model of the analysis.
        models: Model names in the YAML's order.
        items: The usable items in the YAML's (or manifest's) order.
        path: The YAML file (None for a study built in code).
        problems: Skipped entries, with file and line.
    """

    name: str
    title: str
    instructions: str
    root: Path
    seed: int
    shuffle_items: bool
    reference: str
    models: list[str]
    items: list[StudyItem]
    path: Path | None = None
    problems: Problems = field(default_factory=Problems)

    def __post_init__(self) -> None:
        self._by_id = {item.id: item for item in self.items}

    def item(self, item_id: str) -> StudyItem | None:
        """The item with this id, or None (ids from requests are only ever looked up here)."""
        return self._by_id.get(item_id)

    @property
    def subsets(self) -> list[str]:
        """Subsets in order of first appearance."""
        return list(dict.fromkeys(item.subset for item in self.items))

    def _rng(self, *parts: str) -> random.Random:
        # Python's hash() is salted per process; a digest keeps orders stable across restarts.
        digest = hashlib.sha256("\x1f".join((str(self.seed), self.name, *parts)).encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def shown_order(self, annotator: str, item_id: str) -> list[str]:
        """The models in the order this annotator sees them on this item (stable on reload)."""
        order = list(self.models)
        self._rng("order", annotator, item_id).shuffle(order)
        return order

    def annotator_items(self, annotator: str) -> list[StudyItem]:
        """The items in the order this annotator goes through them."""
        items = list(self.items)
        if self.shuffle_items:
            self._rng("items", annotator).shuffle(items)
        return items


def validate_annotator(annotator: str) -> str:
    """Return the stripped annotator id, or raise :class:`DataError` when it is not acceptable."""
    annotator = annotator.strip()
    if not ANNOTATOR_RE.match(annotator):
        raise DataError(
            "annotator ids are 1-64 characters: letters, digits and . _ @ - (starting with a letter or digit)"
        )
    return annotator


def default_db_path(study_path: str | os.PathLike[str]) -> Path:
    """Where the votes of a study go unless told otherwise: ``<study>.votes.sqlite`` beside it."""
    study_path = Path(study_path)
    return study_path.with_name(f"{study_path.stem}.votes.sqlite")


def _seed(value: Any, place: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{place}: `seed` must be a whole number, got {clean(value) if isinstance(value, dict) else value!r}")
    return value


def _raw_items(data: dict[str, Any], root: Path, file: Path, problems: Problems) -> list[tuple[int, dict]]:
    """``items:`` entries or a manifest's triplets, as (line, {id, subset, source, action}).

    Raises:
        ConfigError: Neither or both of ``items`` and ``manifest``, or an item with a key not in
            :data:`ITEM_KEYS` (naming its file and line).
    """
    if ("items" in data) == ("manifest" in data):
        raise ConfigError(f"{file}: give either `items` or `manifest`")
    if "manifest" in data:
        manifest = resolve_under(root, data["manifest"])  # a path string (check_study_keys)
        triplets = read_manifest(manifest, problems, root=manifest.parent)
        return [
            (0, {"id": t.id, "subset": t.subset, "source": t.source, "action": t.action}) for t in triplets
        ]
    if not isinstance(data["items"], list):
        raise ConfigError(f"{file}: `items` must be a list")
    out = []
    for entry in data["items"]:
        if not isinstance(entry, dict):
            problems.add(file, 0, f"item is not a mapping: {entry!r}")
            continue
        unknown = sorted(set(clean(entry)) - set(ITEM_KEYS), key=str)
        if unknown:
            raise ConfigError(
                f"{key_place(file, entry, unknown[0])}: unknown item keys {unknown}; known: {list(ITEM_KEYS)}"
            )
        out.append((entry.get(LINE, 0), clean(entry)))
    return out


def read_study_yaml(file: Path) -> dict[str, Any]:
    """The study YAML as a mapping of known keys (each value carrying its line).

    Raises:
        DataError: A missing or unreadable file.
        ConfigError: Not a mapping, an unknown key, or a key's value of the wrong type.
    """
    if not file.is_file():
        raise unless_loop(file, DataError(f"study not found: {file}"))
    try:
        data = yaml.load(read_utf8(file), Loader=LineLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as err:
        raise DataError(yaml_error(file, err)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: a study is a mapping with `items` and `models`")
    unknown = sorted(set(clean(data)) - STUDY_KEYS, key=str)
    if unknown:
        raise ConfigError(f"{file}: unknown study keys {unknown}; known: {sorted(STUDY_KEYS)}")
    check_study_keys(data, file)
    return data


@dataclass
class ItemEntry:
    """An item as the YAML (or manifest) gives it, before any image is opened.

    Attributes:
        line: Its line in the YAML (0 for a manifest's triplet: the manifest reports its own).
        id: The item id (``[A-Za-z0-9._-]``).
        subset: Its subset (``default`` when not given).
        action: The action text, stripped.
        source: The source image, resolved under the study's root.
    """

    line: int
    id: str
    subset: str
    action: str
    source: Path


def item_entries(data: dict[str, Any], base: Path, file: Path, problems: Problems) -> list[ItemEntry]:
    """The entries of ``items:`` (or the manifest) with an id, a source and an action of the
    right types and a source under ``base``; the others are reported to ``problems``. Ids may
    repeat: the callers decide which entry of an id counts."""
    entries = []
    for line, raw in _raw_items(data, base, file, problems):
        missing = [k for k in ("id", "source", "action") if not str(raw.get(k) or "").strip()]
        if missing:
            problems.add(file, line, f"item without {', '.join(missing)}")
            continue
        wrong = wrong_types(raw)  # a source given as a list is no missing file
        if wrong:
            problems.add(file, line, f"wrong type: {wrong}")
            continue
        item_id = str(raw["id"])
        if not ITEM_ID_RE.match(item_id):
            problems.add(file, line, f"bad item id {item_id!r}: use letters, digits and . _ -")
            continue
        try:
            source = resolve_under(base, str(raw["source"]))
        except DataError as err:
            problems.add(file, line, f"item {item_id!r}: {err}")
            continue
        subset = str(raw.get("subset") or "default")
        entries.append(ItemEntry(line, item_id, subset, str(raw["action"]).strip(), source))
    return entries


def _study_items(
    data: dict[str, Any], base: Path, file: Path, specs: dict[str, ModelSpec], problems: Problems
) -> list[StudyItem]:
    """The items with an id, a source, an action and an output of every model, all readable
    images; the others are reported to ``problems``."""
    items: list[StudyItem] = []
    seen: set[str] = set()
    for entry in item_entries(data, base, file, problems):
        if entry.id in seen:
            problems.add(file, entry.line, f"duplicate item id {entry.id!r}")
            continue
        try:
            check_image(entry.source)
            outputs = item_outputs(entry.id, specs)
        except DataError as err:
            problems.add(file, entry.line, f"item {entry.id!r}: {err}")
            continue
        seen.add(entry.id)
        items.append(StudyItem(entry.id, entry.subset, entry.action, entry.source, outputs))
    return items


def study_root(file: Path, data: dict[str, Any], root: str | os.PathLike[str] | None = None) -> Path:
    """The folder every path of the study is resolved under: ``root`` when given, else the
    YAML's ``root`` (relative to the YAML's folder)."""
    return resolve_path(root if root is not None else file.parent / data.get("root", "."))


def load_study(
    path: str | os.PathLike[str], strict: bool = False, root: str | os.PathLike[str] | None = None
) -> Study:
    """Load and check a study YAML.

    Args:
        path: The YAML file.
        strict: Raise on the first bad item instead of skipping it.
        root: Override of the YAML's ``root`` (e.g. to use a shipped study with your own folder).

    Returns:
        The study; skipped items are listed in ``study.problems``.

    Raises:
        ConfigError: For unknown keys (of the study or of an item), a key's value of the wrong
            type (``shuffle_items: "no"``, a path given as a list) or a malformed ``models``
            section (a model name that is not text, a ``pattern`` without ``{id}``).
        DataError: For a missing file, a path escaping ``root``, or no usable item.
    """
    file = Path(path)
    data = read_study_yaml(file)
    base = study_root(file, data, root)
    problems = Problems(strict)
    specs = model_specs(data.get("models"), base, file)
    models = list(specs)
    reference = models[-1] if data.get("reference") is None else data["reference"]
    if reference not in specs:
        raise ConfigError(f"{file}: reference {reference!r} is not one of the models {models}")
    items = _study_items(data, base, file, specs, problems)
    if not items:
        details = "; ".join(str(p) for p in list(problems)[:3])
        raise DataError(f"{file}: no usable item" + (f" ({details})" if details else ""))
    return Study(
        name=data.get("name") or file.stem,
        title=data.get("title") or "Which predicted observation is best?",
        instructions=(data.get("instructions") or DEFAULT_INSTRUCTIONS).strip(),
        root=base,
        seed=_seed(data.get("seed", 0), key_place(file, data, "seed")),
        shuffle_items=data.get("shuffle_items", False),
        reference=reference,
        models=models,
        items=items,
        path=resolve_path(file),
        problems=problems,
    )
