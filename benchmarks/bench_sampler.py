"""Our image sampler against transformers' ``generate``, per backbone family.

For each family (the tiny Chameleon, the tiny causal-vq Gemma and the tiny Emu3), on the same model, prompts
and sampling settings (temperature 1, no top-k/top-p), for N in {1, 8} candidates per prompt:

* **ours**: :func:`worldboot.models.sampling.sample_image_codes`: one prefill per prompt, its
  KV cache repeated N times, logits of the image tokens only, exactly L tokens;
* **generate**: ``model.generate(..., do_sample=True, num_return_sequences=N,
  max_new_tokens=L + 1)`` with a logits processor that allows only image tokens for L steps,
  then forces end-image (what a user of transformers would write); for Emu3 it also forces the
  row end after each row of codes, so that both ways keep Emu3's layout.

It prints the per-sample time of each and their ratio (generate / ours); the target is ours
>= 1.5x faster at N = 8, the condition under which worldboot keeps its own loop. Best of
several interleaved repeats (the machine is shared).

    python benchmarks/bench_sampler.py [--prompts 4] [--repeats 5] [--families emu3] [--verbose]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from worldboot.models.backbone import SamplingConfig
from worldboot.progress import VERBOSE_HELP, quiet_libraries

TARGET = 1.5


class ImageTokensThenEnd(LogitsProcessor):
    """Only image tokens for the image's body after the prompt (with ``row_end`` forced after
    every ``cols`` codes when given), then only the image's closing token."""

    def __init__(self, bb, prompt_len: int) -> None:
        self.image_ids, self.end_id, self.prompt_len = bb.code_to_token, bb.image_close()[0], prompt_len
        self.length, self.cols, self.row_end = bb.image_body_len, bb.grid_hw[1], bb.row_end_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_len
        if step >= self.length:
            allowed = torch.tensor([self.end_id])
        elif self.row_end is not None and step % (self.cols + 1) == self.cols:
            allowed = torch.tensor([self.row_end])
        else:
            allowed = self.image_ids
        masked = torch.full_like(scores, float("-inf"))
        masked[:, allowed] = scores[:, allowed]
        return masked


def families():
    from worldboot.models.causal_vq import tiny_causal_vq
    from worldboot.models.tiny import build_tiny_chameleon, build_tiny_emu3

    return {"chameleon": build_tiny_chameleon(), "causal-vq": tiny_causal_vq(), "emu3": build_tiny_emu3()}


def prompts_for(bb, n: int):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]
    codes = bb.encode_images(images).codes
    return [bb.world_example(c, f"move the object {i} to the left") for i, c in enumerate(codes)]


def ours(bb, prompts, n: int) -> torch.Tensor:
    gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
    return bb.generate_images(prompts, n, SamplingConfig(temperature=1.0, top_k=0, top_p=1.0), gens)


def with_generate(bb, prompts, n: int) -> torch.Tensor:
    ids, mask = bb._left_pad(prompts)
    processor = ImageTokensThenEnd(bb, ids.shape[1])
    torch.manual_seed(0)
    out = bb.core.generate(
        input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
        max_new_tokens=bb.image_body_len + 1, num_return_sequences=n, logits_processor=LogitsProcessorList([processor]),
        pad_token_id=bb.pad_id, eos_token_id=processor.end_id,
    )
    body = out[:, ids.shape[1] : ids.shape[1] + bb.image_body_len]
    if bb.row_end_id is not None:  # the codes without the row ends
        body = body.view(body.shape[0], bb.grid_hw[0], -1)[:, :, :-1].reshape(body.shape[0], -1)
    return body


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--families", nargs="+", metavar="NAME", help="only these (chameleon, causal-vq, emu3)")
    p.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    args = p.parse_args()
    if not args.verbose:  # the worldboot command's quiet console
        quiet_libraries()
    torch.set_num_threads(1)
    results = {}
    for name, bb in families().items():
        if args.families and name not in args.families:
            continue
        bb.model.eval()
        prompts = prompts_for(bb, args.prompts)
        for n in (1, 8):
            with torch.no_grad():
                a, b = ours(bb, prompts, n), with_generate(bb, prompts, n)  # warm-up, and a shape check
            assert a.shape == (len(prompts), n, bb.image_seq_len) and b.shape == (len(prompts) * n, bb.image_seq_len)
            assert bool(torch.isin(b, bb.code_to_token).all())  # generate drew image tokens only
            best = {"ours": float("inf"), "generate": float("inf")}
            for _ in range(args.repeats):  # interleaved: both see the same machine load
                for label, fn in (("ours", ours), ("generate", with_generate)):
                    start = time.perf_counter()
                    with torch.no_grad():
                        fn(bb, prompts, n)
                    best[label] = min(best[label], time.perf_counter() - start)
            per = {k: v / (len(prompts) * n) for k, v in best.items()}
            results[(name, n)] = per["generate"] / per["ours"]
            print(f"{name:10s} N={n}: ours {per['ours'] * 1000:7.1f} ms/sample, generate {per['generate'] * 1000:7.1f} "
                  f"ms/sample, generate/ours = {results[(name, n)]:.2f}x")
    for name in families_run(results):
        ratio = results[(name, 8)]
        verdict = "keep ours" if ratio >= TARGET else "use generate"
        print(f"{name}: at N=8 ours is {ratio:.2f}x faster than generate (target >= {TARGET}x): {verdict}")


def families_run(results: dict) -> list[str]:
    """The families measured, in order."""
    return list(dict.fromkeys(name for name, _ in results))


if __name__ == "__main__":
    main()
