"""Building blocks shared by the Swin-UNet denoiser and the noise predictor (official ResShift/guided-diffusion keys).

``SwinUNet`` holds the whole encoder/decoder topology once; the denoiser and the noise predictor differ only in
their input channels, output channels and what they do with the output (see their ``*_arch.py`` files).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lpnsr_arch.archs.norm import GroupNorm32
from lpnsr_arch.archs.swin import SwinLayer


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of integer timesteps (B,) -> (B, dim), cosines first (the official order)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ResBlock(nn.Module):
    """Residual block with timestep conditioning (scale-shift norm): official key names in/emb/out_layers."""

    def __init__(self, *, channels: int, emb_channels: int, out_channels: int, dropout: float,
                 use_scale_shift_norm: bool):
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(GroupNorm32(32, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3,
                                                                                        padding=1))
        emb_out = 2 * out_channels if use_scale_shift_norm else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        out_conv = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(out_conv.weight)
        nn.init.zeros_(out_conv.bias)
        self.out_layers = nn.Sequential(GroupNorm32(32, out_channels), nn.SiLU(), nn.Dropout(dropout), out_conv)
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            norm, rest = self.out_layers[0], self.out_layers[1:]
            scale, shift = emb_out.chunk(2, dim=1)
            h = rest(norm(h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    """Stride-2 3x3 conv (key ``op``)."""

    def __init__(self, channels: int, out_channels: Optional[int] = None):
        super().__init__()
        self.op = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2 then a 3x3 conv (key ``conv``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode='nearest'))


class TimestepSequential(nn.Sequential):
    """A sequence whose ResBlocks receive the timestep embedding and whose other layers get only the features."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class SwinUNet(nn.Module):
    """The ResShift Swin-UNet topology (official ``UNetModelSwin`` key names), parametrised by input/output channels.

    Args (keyword-only, the official names):
        image_size: latent resolution the model is built for (fixes Swin shifts and mask buffers).
        in_channels: channels of the network input (before the LR condition is concatenated).
        model_channels, channel_mult, num_res_blocks: widths and depths per level.
        out_channels: output channels of the final 3x3 conv.
        attention_resolutions: resolutions (at build size) whose first ResBlock is followed by a Swin layer.
        num_heads / num_head_channels: Swin heads (``num_head_channels != -1`` wins: heads = embed_dim // it).
        swin_depth, swin_embed_dim, window_size, mlp_ratio: the Swin layers.
        cond_lq, lq_size: LR conditioning; the LR (3 ch) is concatenated to the input, through a strided conv
            feature extractor when ``lq_size > image_size``.
        use_checkpoint: recompute the Swin blocks in backward (saves activation memory in training).
    """

    def __init__(self, *, image_size: int, in_channels: int, model_channels: int, out_channels: int,
                 num_res_blocks: Sequence[int] | int, attention_resolutions: Sequence[int], dropout: float,
                 channel_mult: Sequence[int], num_heads: int, num_head_channels: int, use_scale_shift_norm: bool,
                 swin_depth: int, swin_embed_dim: int, window_size: int, mlp_ratio: float, cond_lq: bool,
                 lq_size: int, use_checkpoint: bool, patch_norm: bool, conv_resample: bool, resblock_updown: bool,
                 dims: int, use_fp16: bool, cond_mask: bool):
        super().__init__()
        if patch_norm:
            raise ValueError('patch_norm=True is not supported (every official model uses patch_norm=False)')
        if not conv_resample or resblock_updown:
            raise ValueError('only conv_resample=True and resblock_updown=False are supported (the official setting)')
        if dims != 2:
            raise ValueError(f'only dims=2 is supported, got {dims}')
        if cond_mask:
            raise ValueError('cond_mask=True is not supported (inpainting variant)')
        if use_fp16:
            raise ValueError('use_fp16=True is not supported: run fp16 through autocast (precision options) instead')
        if isinstance(num_res_blocks, int):
            num_res_blocks = [num_res_blocks] * len(channel_mult)
        if len(num_res_blocks) != len(channel_mult):
            raise ValueError(f'num_res_blocks {list(num_res_blocks)} and channel_mult {list(channel_mult)} '
                             'differ in length')
        if num_head_channels == -1 and num_heads < 1:
            raise ValueError(f'set num_heads (>= 1) or num_head_channels; got num_heads={num_heads} and '
                             'num_head_channels=-1')
        if num_head_channels != -1:
            if swin_embed_dim % num_head_channels:
                raise ValueError(f'swin_embed_dim {swin_embed_dim} is not divisible by num_head_channels '
                                 f'{num_head_channels}')
            num_heads = swin_embed_dim // num_head_channels
        self.image_size = image_size
        self.model_channels = model_channels
        self.window_size = window_size
        emb_dim = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        lq_channels = 0
        self.lq_ratio = lq_size // image_size if cond_lq else 1
        if cond_lq:
            if lq_size == image_size:
                self.feature_extractor: nn.Module = nn.Identity()
                lq_channels = 3
            else:
                ratio = lq_size // image_size
                if lq_size < image_size or ratio * image_size != lq_size or ratio & (ratio - 1):
                    raise ValueError(f'lq_size {lq_size} must be image_size {image_size} times a power of two')
                layers: List[nn.Module] = []
                chans, feat = 3, 16
                for _ in range(int(math.log2(ratio))):
                    layers += [nn.Conv2d(chans, feat, 3, padding=1), nn.SiLU(), Downsample(feat, feat * 2)]
                    feat *= 2
                    chans = feat
                self.feature_extractor = nn.Sequential(*layers)
                lq_channels = chans
        self.cond_lq = cond_lq

        def swin(ch: int, res: int) -> nn.Module:
            return SwinLayer(in_channels=ch, embed_dim=swin_embed_dim, num_heads=num_heads, window_size=window_size,
                              depth=swin_depth, resolution=res, mlp_ratio=mlp_ratio, use_checkpoint=use_checkpoint)

        def resblock(ch: int, out: int) -> ResBlock:
            return ResBlock(channels=ch, emb_channels=emb_dim, out_channels=out, dropout=dropout,
                            use_scale_shift_norm=use_scale_shift_norm)

        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(in_channels + lq_channels, ch, 3, padding=1))])
        skip_channels = [ch]
        res = image_size
        for level, mult in enumerate(channel_mult):
            for j in range(num_res_blocks[level]):
                out = int(mult * model_channels)
                layers = [resblock(ch, out)]
                ch = out
                if res in attention_resolutions and j == 0:
                    layers.append(swin(ch, res))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepSequential(Downsample(ch)))
                skip_channels.append(ch)
                res //= 2
        self.middle_block = TimestepSequential(resblock(ch, ch), swin(ch, res), resblock(ch, ch))
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks[level] + 1):
                out = int(model_channels * mult)
                layers = [resblock(ch + skip_channels.pop(), out)]
                ch = out
                if res in attention_resolutions and i == 0:
                    layers.append(swin(ch, res))
                if level and i == num_res_blocks[level]:
                    layers.append(Upsample(ch))
                    res *= 2
                self.output_blocks.append(TimestepSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(32, ch), nn.SiLU(), nn.Conv2d(int(channel_mult[0] * model_channels),
                                                                          out_channels, 3, padding=1))
        # latent H and W must allow the deepest level to be tiled by its Swin windows
        deepest = 2**(len(channel_mult) - 1)
        deepest_window = min(window_size, image_size // deepest)
        self.size_multiple = deepest * deepest_window

    def check_size(self, height: int, width: int) -> None:
        """Raise a clear error when a latent of (height, width) cannot run through the network."""
        m = self.size_multiple
        if height % m or width % m:
            raise ValueError(f'latent size {height}x{width} must be a multiple of {m} for this network; pad the input '
                             f'(the pipeline does this for you)')

    def run(self, x: Tensor, timesteps: Tensor, lq: Optional[Tensor]) -> Tensor:
        """x: (B, in_channels, h, w); timesteps: int64 (B,); lq: (B, 3, h*r, w*r) in [-1, 1]. Returns (B, out, h, w)."""
        self.check_size(x.shape[-2], x.shape[-1])
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(self.time_embed[0].weight.dtype))
        if lq is not None:
            if not self.cond_lq:
                raise ValueError('this network was built with cond_lq=False but received an LR condition')
            expected = (x.shape[0], 3, x.shape[-2] * self.lq_ratio, x.shape[-1] * self.lq_ratio)
            if tuple(lq.shape) != expected:
                raise ValueError(f'lq is {tuple(lq.shape)}; this network (lq_size / image_size = {self.lq_ratio}) '
                                 f'needs {expected} for a latent of {tuple(x.shape)}')
            x = torch.cat([x, self.feature_extractor(lq.to(x.dtype))], dim=1)
        elif self.cond_lq:
            raise ValueError('this network needs the LR condition `lq`')
        h = x
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)
