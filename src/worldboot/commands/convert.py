"""``worldboot convert``: a model's release files to a directory worldboot loads."""

from __future__ import annotations

import argparse

from worldboot.commands import HELP_FORMATTER

EXAMPLE = """example:
  worldboot convert anole /models/Anole-7b-v0.1 --out /models/anole-7b-hf

  SRC is Anole's release folder: models/7b/{consolidated.pth, params.json, consolidate_params.json}
  and tokenizer/{text_tokenizer.json, vqgan.ckpt, vqgan.yaml}. DIR then loads everywhere a model
  directory is asked for (--base, --world, --cdm, --verifier). It needs the model's size in RAM.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``convert anole``."""
    p = sub.add_parser(
        "convert",
        help="convert a model's release files (Anole-7B) to a worldboot model directory",
        description="Convert released weights to transformers' layout, written as safetensors with the "
        "tokenizer, the VQGAN decoder and worldboot.json.",
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    kinds = p.add_subparsers(dest="convert_kind", metavar="{anole}")
    kinds.required = True
    a = kinds.add_parser(
        "anole",
        help="Anole-7B's release folder (Meta's layout) to a worldboot model directory",
        description="Reorders the rotary halves and per-head QK norms of Meta's checkpoint into transformers' "
        "Chameleon layout, renames <reserved08707> to <image>, splits the VQGAN into the model's encoder "
        "and worldboot's decoder file, and copies Anole's tokenizer/ folder beside the weights.",
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    a.add_argument("src", metavar="SRC", help="Anole's release folder")
    a.add_argument("--out", required=True, metavar="DIR", help="the new model directory")
    a.set_defaults(func=run_anole)


def run_anole(args: argparse.Namespace) -> int:
    """Convert and say where the model is."""
    import sys

    from worldboot.models.convert_anole import convert_anole

    out = convert_anole(args.src, args.out)
    print(out)
    print(f"converted {args.src}: load it with --base/--world/--cdm {out}", file=sys.stderr)
    return 0
