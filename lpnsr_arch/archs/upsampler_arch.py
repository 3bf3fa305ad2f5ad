"""Pre-upsamplers: the starting point y of the reverse chain is the encoded pre-upsampled LR image.

LPNSR uses SwinIR-L; BasicSR's own ``SwinIR`` is key- and output-identical to it (spec §1e) but lacks the padding to
a multiple of the window and the final crop that the official forward has. :class:`LPNSRSwinIR` adds just that.
:class:`LPNSRBicubicUpsampler` is the official *training* pre-upsampler. BasicSR's ``RRDBNet`` needs no wrapper;
:class:`LPNSRBicubicResidualRRDBNet` is an RRDBNet that learns a correction of the bicubic upscale (the demonstration
model's pre-upsampler: it starts training at the bicubic result instead of a random image).
All take images in [0, 1] and return the upscaled image, not clamped.
"""
from __future__ import annotations

import functools
import itertools
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from basicsr.archs.rrdbnet_arch import RRDBNet
from basicsr.archs.swinir_arch import (BasicLayer, SwinIR, SwinTransformerBlock, WindowAttention, window_partition,
                                      window_reverse)
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from lpnsr_arch.archs.swin import SHIFT_MASK_CACHE_BYTES, attend_windows, capturing_cuda_graph


def bicubic_upscale(x: Tensor, scale: int) -> Tensor:
    """Bicubic interpolation by ``scale`` with ``align_corners=False`` (the official up-sampling), not clamped."""
    return F.interpolate(x, scale_factor=scale, mode='bicubic', align_corners=False)


DIHEDRAL_TRANSFORMS = tuple((quarter_turns, flip) for quarter_turns in range(4) for flip in (False, True))
"""The eight symmetries of the square: ``(quarter turns, mirror left-right after turning)``."""


def dihedral_self_ensemble(upsample: Callable[[Tensor], Tensor], image: Tensor) -> Tensor:
    """Geometric self-ensemble (EDSR's "x8"): the mean of ``upsample`` over the eight flips and quarter turns of
    ``image``, each output turned back.

    Args:
        upsample: an upscaler, ``(B, C, h, w) -> (B, C, h * s, w * s)`` for any h and w (turns swap them).
        image: (B, C, h, w).

    Returns:
        float32 (B, C, h * s, w * s). The eight passes run one after another (the running sum and one pass's output
        in memory, not eight). Each turned input is made contiguous, so that a square input gives the network one
        layout (one CUDA graph, one compiled graph) rather than two.
    """
    total: Optional[Tensor] = None
    for quarter_turns, flip in DIHEDRAL_TRANSFORMS:
        moved = torch.rot90(image, quarter_turns, dims=(-2, -1))
        moved = (moved.flip(-1) if flip else moved).contiguous()
        out = upsample(moved)
        out = out.flip(-1) if flip else out
        out = torch.rot90(out, -quarter_turns, dims=(-2, -1)).float()
        total = out if total is None else total.add_(out)
    return total.div_(len(DIHEDRAL_TRANSFORMS))


def build_swinir_shift_mask(height: int, width: int, window: int, shift: int, device: torch.device) -> Tensor:
    """SwinIR's additive mask of the shifted windows, (nW, N, N) with N = window², 0 inside a region and -100 across
    regions, for an (height, width) feature map (BasicSR's ``calculate_mask``), built on ``device``."""
    regions = torch.zeros(1, height, width, 1, device=device)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for index, (rows, cols) in enumerate(itertools.product(bounds, bounds)):
        regions[:, rows, cols, :] = index
    ids = window_partition(regions, window).view(-1, window * window)
    return (ids.unsqueeze(1) - ids.unsqueeze(2)).ne(0).float().mul_(-100.0)


_cached_swinir_shift_mask = functools.lru_cache(maxsize=8)(build_swinir_shift_mask)


def swinir_shift_mask(height: int, width: int, window: int, shift: int, device: torch.device) -> Tensor:
    """:func:`build_swinir_shift_mask`, cached per size and device up to
    :data:`~lpnsr_arch.archs.swin.SHIFT_MASK_CACHE_BYTES` (a 256-px LR tile's is 16 MiB at window 8; BasicSR
    rebuilds it on the host for every block and every call at any size but the construction size). Bypassed during
    a CUDA-graph capture, as :func:`~lpnsr_arch.archs.swin.official_shift_mask`."""
    if height * width * window * window * 4 > SHIFT_MASK_CACHE_BYTES or capturing_cuda_graph(device):
        return build_swinir_shift_mask(height, width, window, shift, device)
    return _cached_swinir_shift_mask(height, width, window, shift, device)


class SwinIRWindowAttention(WindowAttention):
    """BasicSR's SwinIR window attention through ``scaled_dot_product_attention`` (same parameters and maths: the
    relative-position bias plus the shift mask as an additive attention mask)."""

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """x: (nW*B, N, C); mask: (nW, N, N) additive, or None. Returns (nW*B, N, C)."""
        windows, n, c = x.shape
        heads = self.num_heads
        q, k, v = self.qkv(x).view(windows, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, heads)
        out = attend_windows(q, k, v, bias.permute(2, 0, 1), mask, scale=self.scale,
                             dropout_p=self.attn_drop.p if self.training else 0.0)
        return self.proj_drop(self.proj(out))


class SwinIRLayer(BasicLayer):
    """BasicSR's SwinIR layer; with ``use_checkpoint`` its blocks get their ``x_size`` (BasicSR's call omits it and
    fails) and are checkpointed only when gradients are on."""

    def forward(self, x: Tensor, x_size: Tuple[int, int]) -> Tensor:
        for block in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, x_size, use_reentrant=False)
            else:
                x = block(x, x_size)
        return x if self.downsample is None else self.downsample(x)


class SwinIRBlock(SwinTransformerBlock):
    """BasicSR's SwinIR block with its shift mask cached per size and device (:func:`swinir_shift_mask`) and no mask
    at all for the unshifted blocks (BasicSR adds an all-zero one at other sizes than the construction size)."""

    def shift_mask(self, x_size: Tuple[int, int], device: torch.device) -> Optional[Tensor]:
        """The (nW, N, N) mask of this block for an ``x_size`` feature map; None for an unshifted block."""
        if self.shift_size == 0:
            return None
        if tuple(x_size) == tuple(self.input_resolution) and self.attn_mask is not None:
            return self.attn_mask
        return swinir_shift_mask(int(x_size[0]), int(x_size[1]), self.window_size, self.shift_size, device)

    def forward(self, x: Tensor, x_size: Tuple[int, int]) -> Tensor:
        """x: (B, H*W, C) tokens of an ``x_size`` = (H, W) map. Returns the same shape."""
        height, width = x_size
        batch, _, channels = x.shape
        window, shift = self.window_size, self.shift_size
        features = self.norm1(x).view(batch, height, width, channels)
        if shift:
            features = torch.roll(features, shifts=(-shift, -shift), dims=(1, 2))
        windows = window_partition(features, window).view(-1, window * window, channels)
        windows = self.attn(windows, mask=self.shift_mask(x_size, x.device))
        features = window_reverse(windows.view(-1, window, window, channels), window, height, width)
        if shift:
            features = torch.roll(features, shifts=(shift, shift), dims=(1, 2))
        x = x + self.drop_path(features.reshape(batch, height * width, channels))
        return x + self.drop_path(self.mlp(self.norm2(x)))


@ARCH_REGISTRY.register()
class LPNSRSwinIR(SwinIR):
    """BasicSR ``SwinIR`` with the official reflect padding to a multiple of ``window_size`` and the crop back, its
    window attention through ``scaled_dot_product_attention`` and its shift masks cached per size and device.

    Same constructor and state-dict keys as BasicSR's ``SwinIR`` (defaults: SwinIR-L, real-SR x4 GAN model).
    Input (B, 3, H, W) in [0, 1] (``img_range`` 1); output (B, 3, H*upscale, W*upscale).
    """

    def __init__(self, *, upscale: int = 4, in_chans: int = 3, img_size: int = 64, window_size: int = 8,
                 img_range: float = 1.0, depths: Sequence[int] = (6, ) * 9, embed_dim: int = 240,
                 num_heads: Sequence[int] = (8, ) * 9, mlp_ratio: float = 2.0, upsampler: str = 'nearest+conv',
                 resi_connection: str = '3conv', drop_path_rate: float = 0.1, use_checkpoint: bool = False):
        super().__init__(upscale=upscale, in_chans=in_chans, img_size=img_size, window_size=window_size,
                         img_range=img_range, depths=list(depths), embed_dim=embed_dim, num_heads=list(num_heads),
                         mlp_ratio=mlp_ratio, upsampler=upsampler, resi_connection=resi_connection,
                         drop_path_rate=drop_path_rate, use_checkpoint=use_checkpoint)
        self.scale = upscale
        self.pad_multiple = window_size
        for module in self.modules():  # same parameters and keys; faster forward passes (see the two classes)
            if type(module) is WindowAttention:
                module.__class__ = SwinIRWindowAttention
            elif type(module) is SwinTransformerBlock:
                module.__class__ = SwinIRBlock
            elif type(module) is BasicLayer:
                module.__class__ = SwinIRLayer

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.pad_multiple, (-w) % self.pad_multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode='reflect')
        return super().forward(x)[..., :h * self.upscale, :w * self.upscale]


@ARCH_REGISTRY.register()
class LPNSRBicubicUpsampler(nn.Module):
    """Bicubic interpolation by ``scale`` (``align_corners=False``): the official training pre-upsampler."""

    def __init__(self, *, scale: int = 4):
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return bicubic_upscale(x, self.scale)


@ARCH_REGISTRY.register()
class LPNSRBicubicResidualRRDBNet(RRDBNet):
    """BasicSR ``RRDBNet`` plus a global bicubic skip: ``out = bicubic(x) + RRDBNet(x)``.

    Same state-dict keys as ``RRDBNet`` and its constructor arguments but ``scale`` (x4 only: BasicSR's ``RRDBNet``
    takes ``scale`` for its pixel-unshuffle x1/x2 inputs, which this network has no use for). ``conv_last`` starts
    at zero, so an untrained network returns exactly the bicubic upscale and training only has to learn the
    correction (denoising, deblurring, detail). Input (B, 3, H, W) in [0, 1]; output (B, 3, 4H, 4W), not clamped.
    """

    def __init__(self, *, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 23,
                 num_grow_ch: int = 32):
        if num_in_ch != num_out_ch:
            raise ValueError(f'LPNSRBicubicResidualRRDBNet: num_in_ch ({num_in_ch}) must equal num_out_ch '
                             f'({num_out_ch}) for the bicubic skip')
        super().__init__(num_in_ch=num_in_ch, num_out_ch=num_out_ch, scale=4, num_feat=num_feat,
                         num_block=num_block, num_grow_ch=num_grow_ch)
        with torch.no_grad():
            self.conv_last.weight.zero_()
            self.conv_last.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return bicubic_upscale(x, 4) + super().forward(x)
