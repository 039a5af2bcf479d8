"""The tiny foundation model of the procedural world: knows its pictures and words, not its dynamics.

Anole-7B, the paper's starting point, has seen countless images and captions but was never
trained to predict what an action does to a scene. worldboot's embedded demo needs a base of
the same kind for its own world (:mod:`worldboot.world.scene`), small enough to build on a
laptop in minutes. :func:`get_world_base` builds it on first use and caches it.

**Recipe** (:class:`BaseRecipe`; presets ``smoke`` and ``paper``, mirrored in
``configs/demo/base_*.yaml``):

1. *Tokenizer of words.* :func:`worldboot.models.tiny.build_tokenizer` (byte-level BPE) is
   trained on :func:`text_corpus`: scene captions (:func:`describe`), the action texts of
   every paraphrase template of every action kind, and the prompt templates. The action
   *words* are known; what actions do is not.
2. *Tokenizer of images.* A VQ model of Chameleon's architecture (transformers'
   ``ChameleonVQVAE`` + our ``ChameleonVQDecoder``; 64-px images, three halvings, 8x8 = 64
   tokens, 2x2 for each cell of the world's grid) trained by
   :func:`worldboot.base.vq_train.train_vq` with *given* codes: every token's code is the
   part of the drawing the renderer put there (:func:`~worldboot.world.patches.patch_codes`:
   the bare table, or a quarter of one of 84 shape x state x colour x size drawings). The encoder learns to name each cell's
   drawing, under camera jitter and at the clips' resolution too; the decoder learns to draw
   each code. So the round trip is exact when the encoder is, and a cell an action does not
   touch keeps its code: the properties a dynamics model (compare two token grids) and a world
   model (copy what did not change) build on.
3. *Language model.* A tiny Chameleon (the VQ frozen) is fully trained on interleaved captions
   and single images, ``<s> [boi] image [eoi] caption </s>`` and ``<s> caption [boi] image
   [eoi] </s>``, and (``copy_fraction``) on one image shown twice, ``<s> [boi] image [eoi]
   [boi] image [eoi] </s>``, with the next-token loss on every token. No sequence holds two
   different images or an action text, so no dynamics are learnt; the repeated image teaches
   that token positions of one image correspond to those of the next. With ``lm.code_init:
   words`` (both presets) every image code's embeddings start from the words of what it shows
   (:func:`link_codes_to_words`), the link between image tokens and words that a foundation
   model brings from its pre-training on captioned images. The base's world layout
   (:data:`PROMPTS`) puts the action before the source image, so that a world model's source
   and target are adjacent in the same way. Data order and initialisation are seeded: the
   same recipe gives the same model.

**Quality** is measured after each build and saved in ``base_info.json``: the tokenizer's code
accuracy (plain and shaken scenes), its round trip (``parse_scene(decode(encode(render(s))))
== s`` on held-out scenes), how many codes of untouched cells an action keeps
(:func:`locality_rate`), the language model's held-out loss, greedy captioning and
caption-to-image generation. Measured figures and the recipes tried before are in
``docs/results.md`` and ``docs/log.md``.

**Cache.** The model lives in ``$WORLDBOOT_CACHE/base-<preset>-<hash>/`` (default
``~/.cache/worldboot``), where the hash covers the recipe, :data:`RECIPE_VERSION` and the
world's constants (palette, shapes, grid, cell kinds, templates). It is built in a temporary
folder and renamed into place under a file lock, so concurrent builders wait for one another
and a killed build leaves nothing half-written behind.
"""

from worldboot.base.checks import lm_checks, locality_rate, vq_parse_rate
from worldboot.base.data import (
    caption_image_ids,
    copy_image_ids,
    crowded_scene,
    describe,
    describe_object,
    encode_scenes,
    encoder_input,
    eval_scenes,
    pad_batch,
    text_corpus,
    untouched_tokens,
    vq_batch,
)
from worldboot.base.pretrain import link_codes_to_words, pretrain_lm
from worldboot.base.recipe import (
    INFO_FILE,
    PRESETS,
    PROMPTS,
    RECIPE_VERSION,
    BaseRecipe,
    LMRecipe,
    VQRecipe,
    load_recipe,
    recipe_hash,
    world_fingerprint,
)
from worldboot.base.store import (
    base_path,
    build_world_base,
    cache_root,
    get_world_base,
    is_built,
    read_info,
)

__all__ = [
    "INFO_FILE", "PRESETS", "PROMPTS", "RECIPE_VERSION", "BaseRecipe", "LMRecipe", "VQRecipe",
    "base_path", "build_world_base", "cache_root", "caption_image_ids", "copy_image_ids", "crowded_scene",
    "describe", "describe_object", "encode_scenes", "encoder_input", "eval_scenes", "get_world_base",
    "is_built", "link_codes_to_words", "lm_checks", "load_recipe", "locality_rate", "pad_batch", "pretrain_lm", "read_info",
    "recipe_hash", "text_corpus", "untouched_tokens", "vq_batch", "vq_parse_rate", "world_fingerprint",
]
