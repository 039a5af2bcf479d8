"""``worldboot info``: versions, device and the backbones worldboot knows."""

from __future__ import annotations

import argparse

from worldboot.commands import HELP_FORMATTER

EXAMPLE = """examples:
  worldboot info
  worldboot info --model runs/tiny-model      # also describe a model directory
"""

def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``info`` subcommand."""
    p = sub.add_parser(
        "info",
        help="print versions, device and known backbones",
        description="Print package versions, the compute device and the backbones worldboot can load.",
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    p.add_argument("--model", metavar="DIR", help="also load this model directory and describe it")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the report."""
    import torch
    from rich.table import Table

    from worldboot.progress import console as make_console
    from worldboot.runs import package_versions

    console = make_console()
    table = Table(title="worldboot", show_header=True)
    table.add_column("package")
    table.add_column("version")
    for name, version in package_versions().items():
        table.add_row(name, version or "not installed")
    console.print(table)
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.device_count()} x {torch.cuda.get_device_name(0)})"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        device = "mps"
    else:
        device = f"cpu ({torch.get_num_threads()} threads)"
    console.print(f"device: {device}")
    console.print("backbones:")
    from worldboot.models import FAMILIES

    for name, (loader, what) in FAMILIES.items():
        console.print(f"  {name}: {what} [{loader}]")
    if args.model:
        from worldboot.models import load_backbone

        bb = load_backbone(args.model)
        n_params = sum(p.numel() for p in bb.model.parameters())
        console.print(
            f"model {args.model}: {bb.family}, {n_params:,} parameters, {_shape(bb)} images, "
            f"{bb.image_seq_len} tokens per image, {bb.codebook_size} codes, "
            f"tokenizer fingerprint {bb.tokenizer_fingerprint()}"
        )
    return 0


def _shape(backbone) -> str:
    """``512-px`` for a square image, ``384x512-px`` (height x width) otherwise."""
    height, width = backbone.image_shape
    return f"{height}-px" if height == width else f"{height}x{width}-px"
