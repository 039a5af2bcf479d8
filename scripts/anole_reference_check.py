"""``worldboot convert anole`` against GAIR-NLP/anole's own ``ImageTokenizer``, once, on a tiny
release in Anole's exact layout (bf16 language model, float32 ``vqgan.ckpt``).

The reference code is not part of worldboot: give a checkout of https://github.com/GAIR-NLP/anole
(``--anole-repo``); its ``chameleon/inference/image_tokenizer.py`` and ``vqgan.py`` are imported
from there. For each image (RGB noise, grey noise, RGBA noise, a flat colour, and scikit-image's
photos resized to the release's resolution) it compares:

* the codes: the reference's ``_whiten_transparency`` and ``_vqgan_input_from`` (at the tiny
  release's resolution; Anole's is 512) and its ``VQModel.encode``, against the converted
  model's ``encode_images``;
* the decode of those codes: the reference's ``VQModel.decode`` of its codebook entries,
  clamped to [-1, 1] as its ``_pil_from_chw_tensor`` does, against worldboot's decoder, as
  float pixels (the two write uint8 differently: the reference truncates, worldboot rounds).

    git clone https://github.com/GAIR-NLP/anole /tmp/anole
    python scripts/anole_reference_check.py --anole-repo /tmp/anole
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--anole-repo", required=True, help="a checkout of GAIR-NLP/anole")
    args = p.parse_args()
    repo = Path(args.anole_repo)
    if not (repo / "chameleon" / "inference" / "image_tokenizer.py").is_file():
        sys.exit(f"{repo}: no chameleon/inference/image_tokenizer.py (a checkout of GAIR-NLP/anole?)")

    import numpy as np
    import torch
    import yaml
    from PIL import Image

    from worldboot.progress import quiet_libraries

    quiet_libraries()
    sys.path[:0] = [str(ROOT / "tests"), str(repo)]
    from chameleon.inference.image_tokenizer import ImageTokenizer  # the reference, from the checkout

    from anole_release import write_release
    from worldboot.cli import main as cli
    from worldboot.models import load_backbone

    work = Path(tempfile.mkdtemp(prefix="wb-anole-ref-"))
    _, release, _ = write_release(work / "release")
    ckpt = release / "models/7b/consolidated.pth"  # Anole ships its language model in bf16
    torch.save({k: v.to(torch.bfloat16) for k, v in torch.load(ckpt, weights_only=True).items()}, ckpt)
    assert cli(["convert", "anole", str(release), "--out", str(work / "converted")]) == 0
    ours = load_backbone(work / "converted", dtype="bfloat16")
    tok = release / "tokenizer"
    reference = ImageTokenizer(str(tok / "vqgan.yaml"), str(tok / "vqgan.ckpt"), device="cpu")
    size = int(yaml.safe_load((tok / "vqgan.yaml").read_text())["model"]["params"]["ddconfig"]["resolution"])

    import skimage.data

    rng = np.random.default_rng(0)
    images = {
        "RGB noise": Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB"),
        "grey noise": Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L"),
        "RGBA noise": Image.fromarray(rng.integers(0, 256, (size, size, 4), dtype=np.uint8), "RGBA"),
        "flat colour": Image.fromarray(np.full((size, size, 3), (30, 120, 220), dtype=np.uint8), "RGB"),
    }
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        images[f"skimage {name}"] = Image.fromarray(getattr(skimage.data, name)()).resize((size, size), Image.LANCZOS)
    vq = reference._vq_model
    total = same = 0
    worst = 0.0
    for name, img in images.items():
        pixels = reference._vqgan_input_from(reference._whiten_transparency(img), target_image_size=size)
        with torch.no_grad():
            _, _, (_, _, want) = vq.encode(pixels.to(reference._dtype))
            got = ours.encode_images([img]).codes.reshape(-1)
            want = want.reshape(-1)
            grid = size // 2 ** (len(vq.encoder.down) - 1)
            entry = vq.quantize.get_codebook_entry(want, (1, grid, grid, vq.quantize.embedding.weight.shape[-1]))
            theirs = vq.decode(entry).float().clamp(-1.0, 1.0)  # as its _pil_from_chw_tensor clamps
            mine = ours.vqgan.decode(want.reshape(1, -1)).float()
        agree = int((got == want).sum())
        diff = float((mine - theirs).abs().max())
        total, same, worst = total + want.numel(), same + agree, max(worst, diff)
        print(f"{name:18s} codes equal {agree}/{want.numel()}, decode max |difference| {diff:.2g} (pixels in [-1, 1])")
    print(f"all: {same}/{total} codes equal ({same / total:.2%}), decode max |difference| {worst:.2g}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
