"""The VQGAN image tokenizer: transformers' Chameleon encoder plus a Chameleon-compatible decoder.

transformers' ``ChameleonVQVAE`` has the encoder, ``quant_conv``, the quantizer and
``post_quant_conv`` but no decoder, so generated tokens cannot become pixels. We add the
decoder of Chameleon's taming-style VQGAN, with the same module names, so that Anole's
``tokenizer/vqgan.ckpt`` loads strictly (see :func:`split_taming_state_dict`). It is written
here because no maintained library ships it for transformers; its residual and attention
blocks are transformers' own classes (the key names match the checkpoint).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.chameleon.configuration_chameleon import ChameleonVQVAEConfig
from transformers.models.chameleon.modeling_chameleon import (
    ChameleonVQVAE,
    ChameleonVQVAEEncoderAttnBlock,
    ChameleonVQVAEEncoderResnetBlock,
)

from worldboot.errors import ModelError
from worldboot.models.files import field_value, load_safetensors, tensor_mapping


class _Upsample(nn.Module):
    """Nearest-neighbour doubling then a 3x3 convolution (taming's ``Upsample(with_conv=True)``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ChameleonVQDecoder(nn.Module):
    """The decoder of Chameleon's VQGAN, mirroring transformers' encoder config.

    Module names follow the taming checkpoint: ``conv_in``, ``mid.block_1``, ``mid.attn_1``,
    ``mid.block_2``, ``up.{level}.block.{i}``, ``up.{level}.attn.{i}``,
    ``up.{level}.upsample.conv``, ``norm_out``, ``conv_out``.

    Args:
        config: The VQ config shared with the encoder (``latent_channels`` is taming's
            ``z_channels``, ``base_channels`` its ``ch``, ``channel_multiplier`` its ``ch_mult``).
    """

    def __init__(self, config: ChameleonVQVAEConfig) -> None:
        super().__init__()
        mult = tuple(config.channel_multiplier)
        self.num_resolutions = len(mult)
        self.num_res_blocks = config.num_res_blocks
        block_in = config.base_channels * mult[-1]
        curr_res = config.resolution // 2 ** (self.num_resolutions - 1)
        attn_resolutions = config.attn_resolutions or []

        self.conv_in = nn.Conv2d(config.latent_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ChameleonVQVAEEncoderResnetBlock(config, block_in, block_in)
        self.mid.attn_1 = (
            ChameleonVQVAEEncoderAttnBlock(block_in) if config.attn_type == "vanilla" else nn.Identity()
        )
        self.mid.block_2 = ChameleonVQVAEEncoderResnetBlock(config, block_in, block_in)

        ups: list[nn.Module] = []
        for level in reversed(range(self.num_resolutions)):
            block = nn.ModuleList()
            attn = nn.ModuleList()
            block_out = config.base_channels * mult[level]
            for _ in range(self.num_res_blocks + 1):
                block.append(ChameleonVQVAEEncoderResnetBlock(config, block_in, block_out))
                block_in = block_out
                if curr_res in attn_resolutions:
                    attn.append(ChameleonVQVAEEncoderAttnBlock(block_in))
            up = nn.Module()
            up.block = block
            up.attn = attn
            if level != 0:
                up.upsample = _Upsample(block_in)
                curr_res *= 2
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)
        self.norm_out = nn.GroupNorm(num_groups=32, num_channels=block_in, eps=1e-6, affine=True)
        self.conv_out = nn.Conv2d(block_in, config.in_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, latent_channels, h, w]`` to pixels ``[B, 3, H, W]`` in about [-1, 1]."""
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(range(self.num_resolutions)):
            up = self.up[level]
            for i, block in enumerate(up.block):
                h = block(h)
                if len(up.attn) > 0:
                    h = up.attn[i](h)
            if level != 0:
                h = up.upsample(h)
        h = self.norm_out(h)
        h = h * torch.sigmoid(h)
        return self.conv_out(h)


class VQGAN(nn.Module):
    """Encoder, quantizer and decoder of one image tokenizer.

    Args:
        vq: transformers' ``ChameleonVQVAE`` (shared with the language model, not copied).
        decoder: The matching decoder.
    """

    def __init__(self, vq: ChameleonVQVAE, decoder: ChameleonVQDecoder) -> None:
        super().__init__()
        self.vq = vq
        self.decoder = decoder

    @property
    def grid(self) -> int:
        """Side of the token grid (e.g. 32 for 512-pixel Anole images)."""
        cfg = self.vq.config
        return cfg.resolution // 2 ** (len(cfg.channel_multiplier) - 1)

    @property
    def grid_hw(self) -> tuple[int, int]:
        """Rows and columns of the token grid (square here)."""
        return self.grid, self.grid

    @property
    def codebook_size(self) -> int:
        """Number of codebook entries ``K``."""
        return int(self.vq.config.num_embeddings)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the encoder takes pixels in."""
        return self.vq.quant_conv.weight.dtype

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels ``[B, 3, H, W]`` in [-1, 1] to codes ``[B, L]`` and pre-quantisation features ``[B, L, D]``.

        The features are the ``quant_conv`` output, the vectors the quantizer snaps to the
        codebook: the space in which the paper's Eq. 2 measures change.
        """
        hidden = self.vq.encoder(pixels)
        pre_quant = self.vq.quant_conv(hidden)
        _, _, indices = self.vq.quantize(pre_quant)
        batch, dim = pre_quant.shape[:2]
        features = pre_quant.permute(0, 2, 3, 1).reshape(batch, -1, dim)
        return indices.view(batch, -1), features

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, L]`` (codebook ids) to pixels ``[B, 3, H, W]`` in [-1, 1]."""
        batch, length = codes.shape
        grid = int(round(length**0.5))
        if grid * grid != length:
            raise ValueError(f"{length} codes do not form a square grid")
        emb = self.vq.quantize.embedding(codes)  # [B, L, D]
        emb = emb.view(batch, grid, grid, -1).permute(0, 3, 1, 2).contiguous()
        return self.decoder(self.vq.post_quant_conv(emb)).clamp(-1.0, 1.0)


#: Keys of a taming VQGAN checkpoint that belong to its training loss (discriminator, LPIPS)
#: and not to the tokenizer.
_TRAINING_ONLY_PREFIXES = ("loss.",)


def split_taming_state_dict(
    state_dict: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a taming-style VQGAN state dict into transformers' VQ keys and decoder keys.

    transformers' ``ChameleonVQVAE`` uses taming's names for ``encoder.*``, ``quant_conv``,
    ``quantize.embedding`` and ``post_quant_conv``; ``decoder.*`` goes to
    :class:`ChameleonVQDecoder` with the prefix removed; ``loss.*`` is dropped. Any other key is
    an error, so that a wrong checkpoint is not half-loaded.

    Returns:
        ``(vq_state_dict, decoder_state_dict)``.
    """
    vq_sd: dict[str, torch.Tensor] = {}
    dec_sd: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        if key.startswith(_TRAINING_ONLY_PREFIXES):
            continue
        if key.startswith("decoder."):
            dec_sd[key[len("decoder.") :]] = value
        elif key.startswith(("encoder.", "quant_conv.", "post_quant_conv.", "quantize.")):
            vq_sd[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ModelError(f"unexpected keys in VQGAN checkpoint: {', '.join(sorted(unknown)[:5])}")
    return vq_sd, dec_sd


def vq_config_from_taming_yaml(params: dict[str, Any], where: str = "vqgan.yaml") -> ChameleonVQVAEConfig:
    """transformers' VQ config from the ``model.params`` of a taming ``vqgan.yaml``.

    Args:
        params: The mapping under ``model.params``.
        where: The file, for errors.

    Raises:
        ModelError: Naming the file and the first key that is missing, of the wrong type or out
            of range (``model.params.ddconfig.ch must be a positive integer, got 'x'``).
    """
    dd = params.get("ddconfig")
    if not isinstance(dd, dict):
        raise ModelError(f"{where}: not a taming VQGAN config (no model.params.ddconfig mapping)")

    def value(table: dict[str, Any], key: str, kind: str, default: Any = ...) -> Any:
        name = "model.params." + ("ddconfig." if table is dd else "") + key
        return field_value(table, key, kind, where, name, default)

    ch, ch_mult = value(dd, "ch", "count"), value(dd, "ch_mult", "counts")
    resolution = value(dd, "resolution", "count")
    if ch % 32:  # every GroupNorm of the encoder and decoder has 32 groups of ch x ch_mult channels
        raise ModelError(f"{where}: model.params.ddconfig.ch must be a multiple of 32 (the VQGAN's GroupNorm), got {ch}")
    halvings = len(ch_mult) - 1
    if resolution % 2**halvings:
        raise ModelError(f"{where}: model.params.ddconfig.resolution must be a multiple of {2**halvings} (ch_mult "
                         f"halves it {halvings} times), got {resolution}")
    config = dict(
        embed_dim=value(params, "embed_dim", "count"),
        num_embeddings=value(params, "n_embed", "count"),
        double_latent=value(dd, "double_z", "flag", False),
        latent_channels=value(dd, "z_channels", "count"),
        resolution=resolution,
        in_channels=value(dd, "in_channels", "count"),
        base_channels=ch,
        channel_multiplier=list(ch_mult),
        num_res_blocks=value(dd, "num_res_blocks", "count0"),
        attn_resolutions=list(value(dd, "attn_resolutions", "counts0", [])),
        dropout=float(value(dd, "dropout", "share", 0.0)),
    )
    try:
        return ChameleonVQVAEConfig(**config)
    except (TypeError, ValueError) as err:  # transformers' own checks, should it add some
        raise ModelError(f"{where}: not a VQGAN config transformers accepts ({str(err).strip().splitlines()[0]})") from None


def read_taming_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a VQGAN checkpoint safely: safetensors, or a torch pickle with ``weights_only=True``.

    Raises:
        ModelError: When it is missing, unsafe or unreadable, or holds anything but tensors by
            name (or a ``state_dict`` of them).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"VQGAN checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an unsafe pickle: refuse rather than execute it
        raise ModelError(
            f"{path}: cannot be read with weights_only=True ({type(err).__name__}); "
            "convert it to safetensors on a trusted machine first"
        ) from None
    if isinstance(blob, dict) and "state_dict" in blob:
        return tensor_mapping(blob["state_dict"], path, "its state_dict")
    return tensor_mapping(blob, path)


def vqgan_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """``vqgan.safetensors`` or Anole's ``vqgan.ckpt`` in ``folder`` (None: neither)."""
    for name in ("vqgan.safetensors", "vqgan.ckpt"):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def load_taming_vqgan(
    ckpt_path: str | os.PathLike[str], yaml_path: str | os.PathLike[str]
) -> tuple[ChameleonVQVAEConfig, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Config and split state dicts of Anole's ``tokenizer/vqgan.ckpt`` + ``vqgan.yaml``.

    Raises:
        ModelError: A missing or damaged file, naming it (and the key of ``vqgan.yaml``).
    """
    import yaml

    yaml_path = Path(yaml_path)
    if not yaml_path.is_file():
        raise ModelError(f"VQGAN config not found: {yaml_path}")
    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ModelError(f"{yaml_path}: not a readable YAML file ({str(err).splitlines()[0]})") from None
    params = data.get("model") if isinstance(data, dict) else None
    params = params.get("params") if isinstance(params, dict) else None
    if not isinstance(params, dict):
        # Anole's vqgan.yaml holds model.params.ddconfig (and embed_dim, n_embed).
        raise ModelError(f"{yaml_path}: not a taming VQGAN config (no model.params mapping, with its ddconfig)")
    config = vq_config_from_taming_yaml(params, str(yaml_path))
    state = read_taming_checkpoint(ckpt_path)
    try:
        vq_sd, dec_sd = split_taming_state_dict(state)
    except ModelError as err:  # it names no file
        raise ModelError(f"{ckpt_path}: {err}") from None
    return config, vq_sd, dec_sd


def build_taming_vqgan(ckpt_path: str | os.PathLike[str], yaml_path: str | os.PathLike[str]) -> VQGAN:
    """The VQGAN of a taming checkpoint and its ``vqgan.yaml``, every weight loaded strictly.

    Raises:
        ModelError: As :func:`load_taming_vqgan`, or naming the first tensor of the checkpoint
            that ``vqgan.yaml`` gives no place or another shape (or that it lacks).
    """
    config, vq_sd, dec_sd = load_taming_vqgan(ckpt_path, yaml_path)
    vq, decoder = ChameleonVQVAE(config), ChameleonVQDecoder(config)
    for module, state, prefix in ((vq, vq_sd, ""), (decoder, dec_sd, "decoder.")):
        problem = state_misfit(module.state_dict(), state, prefix)
        if problem:
            raise ModelError(f"{ckpt_path} does not fit {Path(yaml_path).name}: {problem}")
        module.load_state_dict(state, strict=True)
    return VQGAN(vq, decoder)


def state_misfit(
    expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], prefix: str = "", config: str = "vqgan.yaml"
) -> str | None:
    """What keeps ``given`` from loading strictly where ``expected`` is (None: nothing), naming
    the first tensor (with ``prefix``) that is missing, has no place or another shape, in words
    that blame ``config`` (the file that describes the model)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    for keys, says in ((missing, "it lacks {}"), (unexpected, "it holds {}, which " + config + " gives no place")):
        if keys:
            return says.format(f"{prefix}{keys[0]}" + (f" and {len(keys) - 1} more" if len(keys) > 1 else ""))
    for key, want in expected.items():
        if tuple(given[key].shape) != tuple(want.shape):
            return f"{prefix}{key} is {list(given[key].shape)} where {config} makes it {list(want.shape)}"
    return None
