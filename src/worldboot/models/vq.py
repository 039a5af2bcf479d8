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


def vq_config_from_taming_yaml(params: dict[str, Any]) -> ChameleonVQVAEConfig:
    """transformers' VQ config from the ``model.params`` of a taming ``vqgan.yaml``."""
    dd = params["ddconfig"]
    return ChameleonVQVAEConfig(
        embed_dim=params["embed_dim"],
        num_embeddings=params["n_embed"],
        double_latent=dd.get("double_z", False),
        latent_channels=dd["z_channels"],
        resolution=dd["resolution"],
        in_channels=dd["in_channels"],
        base_channels=dd["ch"],
        channel_multiplier=list(dd["ch_mult"]),
        num_res_blocks=dd["num_res_blocks"],
        attn_resolutions=list(dd.get("attn_resolutions") or []),
        dropout=dd.get("dropout", 0.0),
    )


def read_taming_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a VQGAN checkpoint safely: safetensors, or a torch pickle with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"VQGAN checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an unsafe pickle: refuse rather than execute it
        raise ModelError(
            f"{path}: cannot be read with weights_only=True ({type(err).__name__}); "
            "convert it to safetensors on a trusted machine first"
        ) from None
    return blob.get("state_dict", blob) if isinstance(blob, dict) else blob


def vqgan_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """``vqgan.safetensors`` or Anole's ``vqgan.ckpt`` in ``folder`` (None: neither)."""
    for name in ("vqgan.safetensors", "vqgan.ckpt"):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def load_taming_vqgan(
    ckpt_path: str | os.PathLike[str], yaml_path: str | os.PathLike[str]
) -> tuple[ChameleonVQVAEConfig, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Config and split state dicts of Anole's ``tokenizer/vqgan.ckpt`` + ``vqgan.yaml``."""
    import yaml

    yaml_path = Path(yaml_path)
    if not yaml_path.is_file():
        raise ModelError(f"VQGAN config not found: {yaml_path}")
    try:
        params = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))["model"]["params"]
        config = vq_config_from_taming_yaml(params)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ModelError(f"{yaml_path}: not a readable YAML file ({str(err).splitlines()[0]})") from None
    except (KeyError, TypeError) as err:
        # Anole's vqgan.yaml holds model.params.ddconfig (and embed_dim, n_embed).
        raise ModelError(f"{yaml_path}: not a taming VQGAN config (no model.params.ddconfig; missing {err})") from None
    vq_sd, dec_sd = split_taming_state_dict(read_taming_checkpoint(ckpt_path))
    return config, vq_sd, dec_sd
