"""Image file helpers shared by every stage."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

from worldboot.errors import DataError


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as RGB, with transparent pixels laid over white, as Chameleon's reference
    preprocessing does (a plain ``convert("RGB")`` keeps whatever colour hides under alpha 0,
    often black): each channel becomes ``(1 - a) * 255 + a * c`` with ``a = alpha / 255``,
    truncated to 8 bits. An RGB image comes back as it is (load a file's image before closing it)."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":
        img = _to_8bit(img)
    rgba = np.asarray(img.convert("RGBA"))
    if (rgba[:, :, 3] == 255).all():
        return img.convert("RGB")
    alpha = rgba[:, :, 3:] / 255.0
    rgb = (1.0 - alpha) * 255.0 + alpha * rgba[:, :, :3]
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _to_8bit(img: Image.Image) -> Image.Image:
    """A 16- or 32-bit integer or float grey image as 8-bit grey (PIL's own conversion clips
    every value above 255 to white): integers by their bit depth (16 bits unless a value is
    larger), floats from [0, 1] when they lie there, else clipped to [0, 255]."""
    a = np.asarray(img)
    if img.mode == "F":
        a = a.astype(np.float64)
        a = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a
    else:
        a = a.astype(np.float64) / (256.0 if a.max(initial=0) < 65536 else 16777216.0)
    return Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8), "L")


def refuse_special_file(path: str | os.PathLike[str]) -> None:
    """Refuse an image path that exists but is a folder, a named pipe or a device: opening a
    pipe blocks until something writes to it, for ever in a batch job.

    Raises:
        DataError: Naming the file and what it is.
    """
    if os.path.exists(path) and not os.path.isfile(path):
        what = "a folder" if os.path.isdir(path) else "not a regular file"
        raise DataError(f"cannot read image {path}: it is {what}")


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image fully into memory as RGB, with a one-line error naming the file.

    Raises:
        DataError: When the file is missing, not a regular file (a named pipe would block the
            read for ever), or not a readable image.
    """
    refuse_special_file(path)
    try:
        with Image.open(path) as img:
            img.load()  # the pixels stay when the file closes
            # Upright as a viewer shows it: phones store the camera's rotation in EXIF.
            return to_rgb(ImageOps.exif_transpose(img))
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None
