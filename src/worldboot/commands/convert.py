"""``worldboot convert``: a model's release files to a directory worldboot loads."""

from __future__ import annotations

import argparse

from worldboot.commands import HELP_FORMATTER

EXAMPLE = """examples:
  worldboot convert anole /models/Anole-7b-v0.1 --out /models/anole-7b-hf
  worldboot convert causal-vq /models/Liquid-7B --vqgan /models/Anole-7b-v0.1/tokenizer \\
      --image-token-offset 256000 --boi "<boi>" --eoi "<eoi>" --out /models/liquid-7b-wb
  worldboot convert emu3 /models/Emu3-Gen-hf --image-size 512 --out /models/emu3-gen-wb

  SRC is Anole's release folder: models/7b/{consolidated.pth, params.json, consolidate_params.json}
  and tokenizer/{text_tokenizer.json, vqgan.ckpt, vqgan.yaml}. DIR then loads everywhere a model
  directory is asked for (--base, --world, --cdm, --verifier). It needs the model's size in RAM.
  causal-vq links a transformers causal LM's files (LLM_DIR) beside a taming VQGAN folder and
  writes worldboot.json: the image codes at --image-token-offset, between --boi and --eoi.
  emu3 links an Emu3 folder in transformers' format (it also loads as it is, at 512 px) and pins
  its image shape (--image-size 512, or height x width as 384x512) in worldboot.json.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``convert anole``, ``convert causal-vq`` and ``convert emu3``."""
    p = sub.add_parser(
        "convert",
        help="make a worldboot model directory from released files (Anole-7B, an LLM + VQGAN like Liquid-7B, Emu3)",
        description="Make a worldboot model directory from released files: `anole` rewrites Meta's Chameleon "
        "checkpoint as transformers safetensors with the tokenizer, the VQGAN decoder and worldboot.json; "
        "`causal-vq` and `emu3` link the released files (causal-vq copies the VQGAN folder to tokenizer/) "
        "and write worldboot.json.",
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    kinds = p.add_subparsers(dest="convert_kind", metavar="{anole,causal-vq,emu3}")
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
    c = kinds.add_parser(
        "causal-vq",
        help="a causal LM with VQ codes in its vocabulary (Liquid-7B) plus its VQGAN, as a model directory",
        description="Links the language model's files, copies the VQGAN folder to tokenizer/ and writes "
        "worldboot.json; checks the markers and the vocabulary first.",
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    c.add_argument("llm", metavar="LLM_DIR", help="a transformers causal LM folder")
    c.add_argument("--vqgan", required=True, metavar="DIR", help="taming VQGAN folder: vqgan.yaml + vqgan.ckpt")
    c.add_argument("--image-token-offset", type=int, required=True, metavar="ID", help="vocabulary id of code 0")
    c.add_argument("--boi", required=True, metavar="TOKEN", help="the begin-image token")
    c.add_argument("--eoi", required=True, metavar="TOKEN", help="the end-image token")
    c.add_argument("--image-size", type=int, metavar="PX", help="image side (default: the VQGAN's resolution)")
    c.add_argument("--out", required=True, metavar="DIR", help="the new model directory")
    c.set_defaults(func=run_causal_vq)
    e = kinds.add_parser(
        "emu3",
        help="an Emu3 folder in transformers' format (Emu3-Gen-hf, Emu3-Chat-hf) at a chosen image shape",
        description="Checks the folder (model_type emu3, a visual token for every code, the layout tokens), "
        "links its files and writes worldboot.json with the image shape, the prompt templates and the "
        "processor's normalisation. BAAI's original layout (custom code) is refused: transformers' "
        "convert_emu3_weights_to_hf.py converts it first.",
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    e.add_argument("src", metavar="SRC", help="an Emu3 folder in transformers' format")
    e.add_argument("--image-size", metavar="PX|HxW", help="image shape: 512, or height x width as 384x512 "
                   "(multiples of 8; default 512, so that two images fit Emu3's 9,216 positions)")
    e.add_argument("--out", required=True, metavar="DIR", help="the new model directory")
    e.set_defaults(func=run_emu3)


def run_anole(args: argparse.Namespace) -> int:
    """Convert and say where the model is."""
    import sys

    from worldboot.models.convert_anole import convert_anole

    out = convert_anole(args.src, args.out)
    print(out)
    print(f"converted {args.src}: load it with --base/--world/--cdm {out}", file=sys.stderr)
    return 0


def run_causal_vq(args: argparse.Namespace) -> int:
    """Assemble and say where the model is."""
    import sys

    from worldboot.models.causal_vq import assemble_causal_vq

    out = assemble_causal_vq(args.llm, args.vqgan, args.out, args.image_token_offset, args.boi, args.eoi,
                             args.image_size)
    print(out)
    print(f"assembled {args.llm} with {args.vqgan}: load it with --base/--world/--cdm {out}", file=sys.stderr)
    return 0


def run_emu3(args: argparse.Namespace) -> int:
    """Prepare and say where the model is."""
    import sys

    from worldboot.models.emu3 import prepare_emu3

    out = prepare_emu3(args.src, args.out, args.image_size)
    print(out)
    print(f"prepared {args.src}: load it with --base/--world/--cdm {out}", file=sys.stderr)
    return 0
