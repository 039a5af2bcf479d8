"""Tiny models of the real architectures, for tests and the embedded default.

A tiny Chameleon is transformers' own ``ChameleonConfig`` with small numbers (torchtune's way:
a tiny model is a config override), a byte-level BPE tokenizer trained with ``tokenizers``
whose vocabulary holds Chameleon's special and ``IMGIMG`` image-token names, and a decoder of
the same VQGAN architecture. Everything saves and reloads with ``save_pretrained`` /
``from_pretrained``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import ChameleonConfig, PreTrainedTokenizerFast

from worldboot.models.backbone import PromptTemplates
from worldboot.models.chameleon import BOI_TOKEN, EOI_TOKEN, ChameleonBackbone, ChameleonWorldLM
from worldboot.models.vq import ChameleonVQDecoder

#: Chameleon's specials that our layouts use, in Anole's order of importance.
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", BOI_TOKEN, EOI_TOKEN, "<reserved08706>", "<image>"]

#: A small English corpus for the default tokenizer: scene, action and caption words. Byte-level
#: BPE encodes any text; the corpus only decides which words get short encodings.
DEFAULT_CORPUS = """
move the red cube to the left. move the blue ball to the right. push the green cylinder further away.
pull the yellow box closer to the camera. put the small purple triangle on the large orange square.
place the cup under the table. put the bottle left of the bowl and right of the plate.
add another grey circle. remove one of the cyan stars. there are three objects on the table.
make the ball bigger. make the cube smaller. change the colour of the box from red to blue.
the bottle falls over. open the box. close the drawer. knock the cup over. lift the lid up.
turn the object around. rotate the block. slide the plate towards the front. drop the pen.
a photo of a table with a red cube, a blue sphere and a green cylinder. an image of a kitchen.
someone is picking something up, putting something down, pouring something into something.
what happened between the two observations? action: next observation: the scene shows
person, hand, cat, dog, car, bike, road, tree, house, window, door, chair, sofa, bed, book, phone.
one two three four five six seven eight nine ten. first second third last. before after then.
""".strip()


@dataclass
class TinyChameleonSpec:
    """Sizes of a tiny Chameleon. Defaults: about 1M language-model parameters, 64-px images,
    512 codes, 8x8 = 64 tokens per image.

    Attributes:
        text_vocab: Text vocabulary size (specials and BPE pieces, without image tokens).
        codebook: Number of VQ codes (one image token each).
        hidden: Transformer width.
        layers: Number of decoder layers.
        heads: Attention heads.
        intermediate: MLP width.
        image_size: Image side in pixels.
        vq_base_channels: VQ width; a multiple of 32 (GroupNorm with 32 groups).
        vq_channel_multiplier: One entry per resolution; ``len - 1`` halvings of the image.
        vq_embed_dim: Codebook vector size.
        vq_attention: Keep the VQ's middle attention block (Chameleon's ``attn_type:
            vanilla``); False replaces it by the identity (``attn_type: none``), for a
            tokenizer whose tokens depend on their neighbourhood only.
        max_positions: Longest sequence.
        seed: Weight initialisation seed.
    """

    text_vocab: int = 2048
    codebook: int = 512
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    intermediate: int = 256
    image_size: int = 64
    vq_base_channels: int = 32
    vq_channel_multiplier: list[int] = field(default_factory=lambda: [1, 1, 2, 2])
    vq_embed_dim: int = 64
    vq_attention: bool = True
    max_positions: int = 512
    seed: int = 0


def image_token_name(code: int) -> str:
    """Chameleon's name of the image token for ``code``: digits as letters A-J, then ``Z``."""
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def train_bpe(specials: list[str], vocab_size: int, corpus: Iterable[str] | None = None,
              unk_token: str | None = None) -> Tokenizer:
    """A byte-level BPE (``tokenizers``) of ``vocab_size`` entries: ``specials`` first, then
    bytes and merges learnt from ``corpus`` (default :data:`DEFAULT_CORPUS`)."""
    tok = Tokenizer(models.BPE(unk_token=unk_token))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    lines = list(corpus) if corpus is not None else DEFAULT_CORPUS.splitlines()
    tok.train_from_iterator(lines, trainer=trainer)
    return tok


def build_tokenizer(codebook: int, text_vocab: int, corpus: Iterable[str] | None = None) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer whose vocabulary also names every image token.

    Ids: Chameleon's specials first, then the ``codebook`` image tokens (contiguous, as in
    Anole, where codes 0..8191 are ids 4..8195), then bytes and merges up to ``text_vocab``
    text entries.
    """
    image_names = [image_token_name(c) for c in range(codebook)]
    return PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(SPECIAL_TOKENS + image_names, text_vocab + codebook, corpus, unk_token="<unk>"),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=[BOI_TOKEN, EOI_TOKEN],
    )


def tiny_config(spec: TinyChameleonSpec, tokenizer: PreTrainedTokenizerFast) -> ChameleonConfig:
    """A ``ChameleonConfig`` of the spec's size, with the tokenizer's vocabulary map."""
    vocab = tokenizer.get_vocab()
    return ChameleonConfig(
        vocab_size=len(vocab),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        vocabulary_map=vocab,
        vq_config={
            "embed_dim": spec.vq_embed_dim,
            "num_embeddings": spec.codebook,
            "latent_channels": spec.vq_embed_dim,
            "base_channels": spec.vq_base_channels,
            "channel_multiplier": list(spec.vq_channel_multiplier),
            "num_res_blocks": 1,
            "attn_resolutions": [],
            "attn_type": "vanilla" if spec.vq_attention else "none",
            "resolution": spec.image_size,
        },
    )


def build_tiny_chameleon(
    spec: TinyChameleonSpec | None = None,
    corpus: Iterable[str] | None = None,
    templates: PromptTemplates | None = None,
) -> ChameleonBackbone:
    """A randomly initialised tiny Chameleon backbone (language model, VQ encoder and decoder).

    Args:
        spec: Sizes; :class:`TinyChameleonSpec` defaults when None.
        corpus: Lines to train the tokenizer on (default: :data:`DEFAULT_CORPUS`).
        templates: Prompt templates of the two layouts.
    """
    spec = spec or TinyChameleonSpec()
    tokenizer = build_tokenizer(spec.codebook, spec.text_vocab, corpus)
    config = tiny_config(spec, tokenizer)
    torch.manual_seed(spec.seed)
    model = ChameleonWorldLM(config).eval()
    decoder = ChameleonVQDecoder(config.vq_config).eval()
    return ChameleonBackbone(model, tokenizer, decoder, spec.image_size, templates)


def save_tiny_chameleon(path: str | os.PathLike[str], spec: TinyChameleonSpec | None = None) -> Path:
    """Build a tiny Chameleon and save it as a worldboot model directory; returns the path."""
    path = Path(path)
    build_tiny_chameleon(spec).save(path)
    return path


#: A minimal chat template for tiny VLMs: ``role: content`` lines, images as the processor's token.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


def save_tiny_llava(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """A tiny random LLaVA (CLIP vision tower + Llama) with its processor, saved for
    ``AutoModelForImageTextToText`` / ``AutoProcessor``: the stand-in for real VLMs such as
    Qwen2.5-VL in tests of the dynamics-direction probe (no hub needed)."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    path = Path(path)
    tok = build_tokenizer(0, 600)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tok.chat_template = TINY_CHAT_TEMPLATE
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=TINY_CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=32, patch_size=8),
        text_config=LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=4, bos_token_id=tok.bos_token_id,
                                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


#: Emu3's special tokens that the tiny Emu3's layouts use (the released tokenizer's names).
EMU3_SPECIALS = ["<|endoftext|>", "<|extra_203|>", "<|extra_204|>", "<|extra_200|>", "<|extra_201|>",
                 "<|image start|>", "<|image end|>", "<|image token|>", "<image>"]


def build_tiny_emu3(seed: int = 0, image_shape: tuple[int, int] = (64, 64), codebook: int = 512,
                    templates: PromptTemplates | None = None) -> Any:
    """A randomly initialised tiny Emu3 from transformers' own configs: Emu3's VQ architecture
    (three 2x downsamplings as Emu3's 8-pixel patch, a temporal stack, middle attention) at widths
    32-64 and a 2-frame stack (Emu3's is 4: a quarter of the decode time here), a 2-layer text
    model, and a byte-level BPE tokenizer holding Emu3's layout tokens and ``<|visual
    tokenNNNNNN|>`` names, which the config's ``vocabulary_map`` maps codes through."""
    from transformers import Emu3Config

    from worldboot.models.emu3 import LAYOUT_TOKENS, Emu3Backbone, Emu3WorldLM

    spec = TinyChameleonSpec()
    visual = [f"<|visual token{c:06d}|>" for c in range(codebook)]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(EMU3_SPECIALS + visual, spec.text_vocab + codebook),
        bos_token="<|extra_203|>", eos_token="<|extra_204|>", pad_token="<|endoftext|>",
        extra_special_tokens={k: v for k, v in LAYOUT_TOKENS.items() if k != "eol_token"} | {"image_token": "<image>"},
    )
    vocab = tokenizer.get_vocab()
    config = Emu3Config(
        vocabulary_map=vocab,
        vq_config={"codebook_size": codebook, "embed_dim": 4, "latent_channels": 4, "base_channels": 32,
                   "channel_multiplier": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [3],
                   "hidden_size": 64, "num_attention_heads": 1, "temporal_downsample_factor": 2},
        text_config={"vocab_size": len(vocab), "hidden_size": spec.hidden, "intermediate_size": spec.intermediate,
                     "num_hidden_layers": spec.layers, "num_attention_heads": spec.heads,
                     "num_key_value_heads": spec.heads // 2, "max_position_embeddings": spec.max_positions,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id, "attention_dropout": 0.0},
    )
    torch.manual_seed(seed)
    model = Emu3WorldLM(config).eval()
    return Emu3Backbone(model, tokenizer, image_shape, templates)


def save_tiny_emu3(path: str | os.PathLike[str], seed: int = 0, image_shape: tuple[int, int] = (64, 64)) -> Path:
    """:func:`build_tiny_emu3` saved as a model directory; returns the path."""
    path = Path(path)
    build_tiny_emu3(seed, image_shape).save(path)
    return path
