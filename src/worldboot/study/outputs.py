"""The ``models:`` section of a study: where each model's output image of an item is.

A model maps its name (text) to a folder holding ``<item id>.png`` (or .jpg/.jpeg/.webp), to
``{dir: FOLDER, pattern: "{id}/edit.png"}`` (the pattern must name the item as ``{id}``, else
every item would show the same image), or to ``{paths: {ITEM_ID: FILE, ...}}``. Every path is
resolved under the study's root and may not leave it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from worldboot.data.schema import resolve_under
from worldboot.errors import ConfigError, DataError, unless_loop
from worldboot.images import refuse_special_file
from worldboot.study.keys import clean, path_text, where

#: Image formats a study or an upload may hold, as PIL names them.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
#: Image suffixes a model folder's outputs are looked up with, in this order.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MODEL_KEYS = ("dir", "pattern", "paths")


@dataclass
class ModelSpec:
    """Where one model's outputs are.

    Attributes:
        folder: The folder of ``<item id>.<suffix>`` (or of ``pattern``), or None.
        pattern: Path of an item's output in ``folder``, naming the item as ``{id}``; or None.
        paths: Item id -> output image, for the items named one by one.
    """

    folder: Path | None
    pattern: str | None
    paths: dict[str, Path]

    def declared(self, item_id: str) -> Path | None:
        """The output of ``item_id`` as the study names it, without looking at the image: its
        ``paths`` entry, its ``pattern`` in the folder, or the first image of the item's id found
        in the folder; None when there is none."""
        if item_id in self.paths:
            return self.paths[item_id]
        if self.folder is None:
            return None
        try:
            return find_output(self.folder, self.pattern, item_id)
        except DataError:
            return None


def check_image(path: Path) -> None:
    """Raise :class:`DataError` unless ``path`` is a PNG, JPEG or WebP image (by content)."""
    refuse_special_file(path)
    try:
        with Image.open(path) as img:
            fmt = img.format
    except FileNotFoundError:
        raise unless_loop(path, DataError(f"image not found: {path}")) from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None
    if fmt not in IMAGE_FORMATS:
        raise DataError(f"image {path} is {fmt}; a study holds PNG, JPEG or WebP")


def find_output(folder: Path, pattern: str | None, item_id: str) -> Path:
    """The output of one item in a model folder, resolved and kept under that folder.

    Raises:
        DataError: The path leaves the folder, or no ``<item id>.<suffix>`` is there.
    """
    if pattern:
        return resolve_under(folder, pattern.format(id=item_id))
    for suffix in IMAGE_SUFFIXES:
        candidate = resolve_under(folder, item_id + suffix)
        if candidate.is_file():
            return candidate
    raise DataError(f"no {item_id}.png/.jpg/.jpeg/.webp in {folder}")


def _check_pattern(pattern: Any, place: str) -> None:
    """Refuse a ``pattern`` that is not text naming the item as ``{id}`` (``"best.png"`` would
    show one image for every item)."""
    try:
        names_item = pattern is None or pattern.format(id="a") != pattern.format(id="b")
    except (AttributeError, KeyError, IndexError, ValueError):
        names_item = False
    if not names_item:
        raise ConfigError(f"{place}: `pattern` must be text naming the item as {{id}}, e.g. '{{id}}.png'")


def _model_spec(name: str, spec: Any, root: Path, where_: str, check_folder: bool) -> ModelSpec:
    """One model's entry of ``models:`` (a folder, or a mapping of ``MODEL_KEYS``)."""
    if isinstance(spec, str):
        spec = {"dir": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where_}: model {name!r} needs a folder or {{dir, pattern}} or {{paths}}")
    unknown = set(clean(spec)) - set(MODEL_KEYS)
    if unknown:
        raise ConfigError(f"{where_}: model {name!r} has unknown keys {sorted(unknown, key=str)}")
    if not isinstance(spec.get("paths") or {}, dict):
        raise ConfigError(f"{where_}: model {name!r}: `paths` must map item ids to images")
    _check_pattern(spec.get("pattern"), f"{where_}: model {name!r}")
    place = f"{where_}: model {name!r}"
    try:
        folder = resolve_under(root, path_text(spec["dir"], place, "dir")) if spec.get("dir") is not None else None
        paths = {
            str(k): resolve_under(root, path_text(v, place, f"paths.{k}"))
            for k, v in clean(spec.get("paths") or {}).items()
        }
    except DataError as err:
        raise DataError(f"{place}: {err}") from None
    if folder is None and not paths:
        raise ConfigError(f"{where_}: model {name!r} needs `dir` or `paths`")
    if check_folder and folder is not None and not folder.is_dir():
        raise unless_loop(folder, DataError(f"{where_}: output folder of model {name!r} not found: {folder}"))
    return ModelSpec(folder, spec.get("pattern"), paths)


def model_specs(raw: Any, root: Path, file: Path, check_folders: bool = True) -> dict[str, ModelSpec]:
    """Parse ``models:`` into name -> :class:`ModelSpec`, in the YAML's order.

    Args:
        raw: The ``models`` value, as :class:`~worldboot.study.keys.LineLoader` read it.
        root: Folder every path is resolved under.
        file: The study YAML, for the messages.
        check_folders: Refuse a model folder that is not there (False: the votes' export,
            which needs no image).

    Raises:
        ConfigError: Fewer than two models, a name that is not text, or a malformed entry.
        DataError: A path leaving ``root``, or (with ``check_folders``) a missing folder.
    """
    if not isinstance(raw, dict) or len(clean(raw)) < 2:
        raise ConfigError(f"{file}: `models` must map at least two model names to output folders")
    specs = {}
    for name, spec in clean(raw).items():
        if not isinstance(name, str) or not name.strip():
            # `null: dir` (an unset variable in a template) would become a model called "None".
            raise ConfigError(
                f"{where(file, raw, name)}: model names must be text, got {name!r}: quote it, or name the model"
            )
        place = where(file, spec) if isinstance(spec, dict) else where(file, raw, name)
        specs[name] = _model_spec(name, spec, root, place, check_folders)
    return specs


def item_outputs(item_id: str, specs: dict[str, ModelSpec]) -> dict[str, Path]:
    """Each model's output image for an item: named in its ``paths``, else found in its folder.

    Raises:
        DataError: A model has no output for the item, or it is no readable image.
    """
    outputs = {}
    for name, spec in specs.items():
        if item_id in spec.paths:
            out = spec.paths[item_id]
        elif spec.folder is not None:
            out = find_output(spec.folder, spec.pattern, item_id)
        else:
            raise DataError(f"model {name!r} has no output for {item_id!r}")
        check_image(out)
        outputs[name] = out
    return outputs
