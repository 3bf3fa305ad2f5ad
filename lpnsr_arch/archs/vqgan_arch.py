"""The VQ-f4 autoencoder (LDM ``VQModelTorch``) that LPNSR and ResShift diffuse in.

State-dict compatible with the official ``autoencoder_vq_f4.pth`` (55,322,782 parameters at the defaults).
``encode`` gives the *unquantised* latent (encoder + ``quant_conv``); ``decode`` quantises to the codebook first
(straight-through, so gradients reach the latent) unless ``quantize=False``. Every official decode quantises.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm1 -> swish -> conv1 -> norm2 -> swish -> dropout -> conv2, plus a 1x1 ``nin_shortcut`` when widths differ."""

    def __init__(self, *, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.nin_shortcut = None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head global self-attention over all H*W positions (1x1-conv q, k, v, proj_out), with a residual.

    Runs through ``scaled_dot_product_attention`` (the official README's xformers path computes the same maths).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (b, hw, c)
        # the 1x1 convs as linear maps over the tokens: q, k, v come out with a contiguous last dimension, which the
        # fused attention kernels need (a transposed conv output sends SDPA to the math path and its hw x hw matrix)
        q, k, v = (F.linear(tokens, proj.weight.flatten(1), proj.bias).unsqueeze(1)
                   for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # (b, 1, hw, c)
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Pad right/bottom by one, then a stride-2 3x3 conv without padding."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest x2 then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))


class _Level(nn.Module):
    """One resolution level: ``block`` (ResnetBlocks), ``attn`` (AttnBlocks) and an optional resampler."""

    def __init__(self, blocks: Sequence[nn.Module], attns: Sequence[nn.Module]):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def run(self, h: Tensor) -> Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[i](h)
        return h


class _Mid(nn.Module):

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(in_channels=channels, out_channels=channels, dropout=dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(in_channels=channels, out_channels=channels, dropout=dropout)

    def forward(self, h: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) -> (B, z_channels, H / 2^(L-1), W / 2^(L-1))."""

    def __init__(self, *, ch: int, ch_mult: Sequence[int], num_res_blocks: int, attn_resolutions: Sequence[int],
                 dropout: float, in_channels: int, resolution: int, z_channels: int, double_z: bool):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        in_mult = (1, ) + tuple(ch_mult)
        res = resolution
        self.down = nn.ModuleList()
        block_in = ch
        for level, mult in enumerate(ch_mult):
            block_in, block_out = ch * in_mult[level], ch * mult
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(in_channels=block_in, out_channels=block_out, dropout=dropout))
                block_in = block_out
                if res in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            stage = _Level(blocks, attns)
            if level != len(ch_mult) - 1:
                stage.downsample = Downsample(block_in)
                res //= 2
            self.down.append(stage)
        self.mid = _Mid(block_in, dropout)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            h = stage.run(h)
            if hasattr(stage, 'downsample'):
                h = stage.downsample(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """Latent (B, z_channels, h, w) -> image (B, out_ch, h * 2^(L-1), w * 2^(L-1))."""

    def __init__(self, *, ch: int, out_ch: int, ch_mult: Sequence[int], num_res_blocks: int,
                 attn_resolutions: Sequence[int], dropout: float, resolution: int, z_channels: int):
        super().__init__()
        block_in = ch * ch_mult[-1]
        res = resolution // 2**(len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = _Mid(block_in, dropout)
        levels = []
        for level in reversed(range(len(ch_mult))):
            block_out = ch * ch_mult[level]
            blocks, attns = [], []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(in_channels=block_in, out_channels=block_out, dropout=dropout))
                block_in = block_out
                if res in attn_resolutions:
                    attns.append(AttnBlock(block_in))
            stage = _Level(blocks, attns)
            if level != 0:
                stage.upsample = Upsample(block_in)
                res *= 2
            levels.insert(0, stage)  # index = resolution level, as in the official state dict
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            h = stage.run(h)
            if hasattr(stage, 'upsample'):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantiser (``embedding`` key) with the straight-through gradient.

    Distances are computed in chunks of positions so memory stays bounded for large latents.
    """

    def __init__(self, *, n_embed: int, embed_dim: int, chunk: int = 16384):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)
        self.chunk = chunk

    def indices(self, z: Tensor) -> Tensor:
        """Code indices (B, h, w) of the nearest codebook vectors to ``z`` (B, C, h, w); distances in float32, also
        under autocast (in bf16 the nearest code changes at a fifth of the positions)."""
        b, c, h, w = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = z.permute(0, 2, 3, 1).reshape(-1, c).float()
            codes = self.embedding.weight.float()
            code_sq = (codes**2).sum(dim=1)
            out = []
            for part in flat.split(self.chunk):
                # |z|^2 - 2 z.e + |e|^2 without the |z|^2 term (the same for every code of a row): one fused pass
                out.append(torch.addmm(code_sq, part, codes.t(), alpha=-2).argmin(dim=1))
        return torch.cat(out).view(b, h, w)

    def forward(self, z: Tensor) -> Tensor:
        """Quantise ``z`` (B, C, h, w); forward value = codebook vectors, gradient = identity (straight-through)."""
        z_q = self.embedding(self.indices(z)).permute(0, 3, 1, 2).to(z.dtype)
        return z + (z_q - z).detach()


_DDCONFIG_KEYS = ('double_z', 'z_channels', 'resolution', 'in_channels', 'out_ch', 'ch', 'ch_mult', 'num_res_blocks',
                  'attn_resolutions', 'dropout', 'padding_mode')
VQ_F4_DDCONFIG: Dict[str, object] = dict(double_z=False, z_channels=3, resolution=256, in_channels=3, out_ch=3,
                                         ch=128, ch_mult=[1, 2, 4], num_res_blocks=2, attn_resolutions=[],
                                         dropout=0.0, padding_mode='zeros')


@ARCH_REGISTRY.register()
class LPNSRVQAutoencoder(nn.Module):
    """VQ-f4 autoencoder: images in [-1, 1] (B, 3, H, W) <-> latents (B, embed_dim, H/4, W/4).

    Args:
        ddconfig: the official encoder/decoder config (keys as in ``VQ_F4_DDCONFIG``; an unknown key is an error).
        n_embed: codebook size.
        embed_dim: latent channels.
    """

    def __init__(self, *, ddconfig: Optional[Dict[str, object]] = None, n_embed: int = 8192, embed_dim: int = 3):
        super().__init__()
        cfg = dict(VQ_F4_DDCONFIG if ddconfig is None else ddconfig)
        unknown = sorted(set(cfg) - set(_DDCONFIG_KEYS))
        if unknown:
            raise KeyError(f'LPNSRVQAutoencoder: unknown ddconfig key(s) {unknown}; expected {list(_DDCONFIG_KEYS)}')
        missing = sorted(set(_DDCONFIG_KEYS) - set(cfg) - {'padding_mode', 'double_z', 'dropout'})
        if missing:
            raise KeyError(f'LPNSRVQAutoencoder: ddconfig lacks {missing}')
        if cfg.get('padding_mode', 'zeros') != 'zeros':
            raise ValueError(f"only padding_mode='zeros' is supported, got {cfg['padding_mode']!r}")
        if cfg.get('double_z', False):
            raise ValueError('a VQ autoencoder has double_z=False')
        common = dict(ch=cfg['ch'], ch_mult=tuple(cfg['ch_mult']), num_res_blocks=cfg['num_res_blocks'],
                      attn_resolutions=tuple(cfg['attn_resolutions']), dropout=float(cfg.get('dropout', 0.0)),
                      resolution=cfg['resolution'], z_channels=cfg['z_channels'])
        self.encoder = Encoder(in_channels=cfg['in_channels'], double_z=False, **common)
        self.decoder = Decoder(out_ch=cfg['out_ch'], **common)
        self.quant_conv = nn.Conv2d(cfg['z_channels'], embed_dim, 1)
        self.quantize = VectorQuantizer(n_embed=n_embed, embed_dim=embed_dim)
        self.post_quant_conv = nn.Conv2d(embed_dim, cfg['z_channels'], 1)
        self.downscale = 2**(len(cfg['ch_mult']) - 1)
        self.latent_channels = embed_dim

    def encode(self, x: Tensor) -> Tensor:
        """Image (B, 3, H, W) in [-1, 1] -> unquantised latent (B, embed_dim, H/4, W/4)."""
        return self.quant_conv(self.encoder(x))

    def decode(self, z: Tensor, quantize: bool = True) -> Tensor:
        """Latent -> image in about [-1, 1] (not clamped). ``quantize=True`` (the official default) snaps to the
        codebook."""
        if quantize:
            z = self.quantize(z)
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))
