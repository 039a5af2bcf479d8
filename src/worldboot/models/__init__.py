"""Backbones: the Protocol every backbone implements, Chameleon/Anole, the VQ decoder, tiny builders.

:func:`load_backbone` is the one way stages open a model directory.
"""

from __future__ import annotations

import os
from typing import Any


def load_backbone(path: str | os.PathLike[str], **kwargs: Any):
    """Open a worldboot model directory (a base model, or a trained CDM/CWM) as a backbone.

    Args:
        path: The directory.
        **kwargs: Passed to the family's loader (``vqgan_dir``, ``dtype``, ``device_map``).

    Returns:
        A :class:`~worldboot.models.backbone.Backbone`.
    """
    from worldboot.models.chameleon import load_chameleon

    return load_chameleon(path, **kwargs)
