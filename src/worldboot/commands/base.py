"""``worldboot base``: build or locate the tiny foundation model of the procedural world."""

from __future__ import annotations

import argparse

from worldboot.commands import HELP_FORMATTER

EXAMPLE = """examples:
  worldboot base path --preset paper          # where the shipped (or cached) base is
  worldboot base build --preset paper --force # rebuild it here into the cache (minutes)
  worldboot base build --config configs/demo/base_paper.yaml lm.steps=2000
  worldboot base build --preset smoke --ship  # from a checkout: rebuild and ship as package data
"""


#: ``worldboot.base.PRESETS``'s names, spelt out because that module imports
#: torch and the parser must not (a test keeps the two equal).
PRESETS = ("smoke", "paper")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="smoke", choices=PRESETS, help="named recipe (default: smoke)")
    p.add_argument("--config", metavar="YAML", help="recipe file changing the preset (configs/demo/base_*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted recipe overrides, e.g. lm.steps=500")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``base build`` and ``base path``."""
    p = sub.add_parser(
        "base",
        help="build or locate the world's foundation model",
        description=(
            "The embedded default base model: a tiny Chameleon whose VQ tokenizer and language model "
            "are pre-trained on the procedural world's images and captions (no dynamics). The smoke and "
            "paper bases ship with the package (worldboot/base/weights/, named by a hash of their recipe); "
            "any other recipe is built once into $WORLDBOOT_CACHE (default ~/.cache/worldboot) under its hash."
        ),
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    groups = p.add_subparsers(dest="base_command", metavar="{build,path}")
    groups.required = True
    b = groups.add_parser(
        "build",
        help="build the base model (or reuse the cached one) and print its path and quality",
        description="Build the base model unless its recipe's build is cached; print its path and measurements.",
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    _common(b)
    b.add_argument("--force", action="store_true", help="rebuild into the cache even if the package ships the "
                   "model or the cache holds it")
    b.add_argument("--ship", action="store_true", help="rebuild, then copy the model into the package's "
                   "base/weights/ as the shipped base of its preset (for a checkout; replaces the old one)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=run_build)
    q = groups.add_parser(
        "path",
        help="print the base model's folder, shipped or cached (exit 1 when not built)",
        description="Print the folder of the base model of a recipe (the package's shipped base, else the "
        "cache's); exit 1 when it has not been built.",
        epilog=EXAMPLE,
        formatter_class=HELP_FORMATTER,
    )
    _common(q)
    q.set_defaults(func=run_path)


def run_build(args: argparse.Namespace) -> int:
    """Build (or reuse) and report."""
    from worldboot.base import get_world_base, load_recipe, read_info
    from worldboot.progress import console as make_console

    recipe = load_recipe(args.preset, args.config, args.overrides)
    err = make_console(stderr=True)
    path = get_world_base(recipe, progress=not args.quiet, force=args.force or args.ship,
                          log=None if args.quiet else err.print)
    if args.ship:
        from worldboot.base.shipped import ship

        path = ship(path, recipe)
    info = read_info(path)
    vq, lm = info["vq"], info["lm"]
    print(path)
    print(
        f"vq: codes right {vq['code_accuracy']:.2%} (jittered or resized {vq['code_accuracy_shaken']:.2%}), "
        f"round trip parses {vq['parse_rate']:.1%} of {info['recipe']['vq']['eval_scenes']} held-out scenes, "
        f"pixel error {vq['pixel_mae']:.2f}/255, codes kept where an action does not act {vq['codes_kept']:.2%}"
    )
    print(
        f"lm: held-out loss {lm['eval_loss']:.3f}, captions exact {lm['caption_exact']:.1%} "
        f"(objects named {lm['caption_objects']:.1%}), caption-to-image parse {lm['image_parse']:.1%}"
        + f", repeated image copied {lm['copy_accuracy']:.1%}"
        + "; "
        f"{info['parameters']:,} parameters, built in {info['seconds']:.0f} s"
    )
    return 0


def run_path(args: argparse.Namespace) -> int:
    """Print the path, or say how to build it."""
    import sys

    from worldboot.base import base_path, is_built, load_recipe
    from worldboot.base.shipped import shipped_path

    recipe = load_recipe(args.preset, args.config, args.overrides)
    path = shipped_path(recipe) if is_built(shipped_path(recipe)) else base_path(recipe)
    if not is_built(path):
        print(f"not built yet: {path} (run 'worldboot base build --preset {args.preset}')", file=sys.stderr)
        return 1
    print(path)
    return 0
