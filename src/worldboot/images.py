"""Image file helpers shared by every stage."""

from __future__ import annotations

import os

from PIL import Image

from worldboot.errors import DataError


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image fully into memory as RGB, with a one-line error naming the file.

    Raises:
        DataError: When the file is missing or not a readable image.
    """
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None
