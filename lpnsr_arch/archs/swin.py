"""The channel-first Swin transformer used inside both Swin-UNets (ResShift's denoiser and LPNSR's noise predictor).

Unlike the usual token-sequence Swin, this variant keeps feature maps as (B, C, H, W): GroupNorm(32) instead of
LayerNorm, 1x1 convolutions for the MLP and the patch (un)embedding, and no residual around a layer.

Two behaviours of the official code are reproduced on purpose because the official checkpoints were trained with them:

* **Construction-time shift rule**: a block built for a resolution ``<= window_size`` uses no shift and a window of
  that resolution, whatever size it later runs at.
* **The official shifted-window mask** (:func:`official_shift_mask`) is not the standard Swin mask: it is recomputed
  for the runtime size at every call (the stored ``attn_mask`` buffer is never read) and only masks the last row of
  windows, split by the token's in-window *column*. Here it is computed once per (size, device, dtype) and cached.

Attention runs through ``scaled_dot_product_attention`` with the relative-position bias (and mask) as an additive
float mask.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lpnsr_arch.archs.norm import GroupNorm32

MASK_VALUE = -100.0  # the official additive mask value (not -inf)


@functools.lru_cache(maxsize=None)
def relative_position_index(window_size: int) -> Tensor:
    """The standard Swin (N, N) int64 index into the (2w-1)^2 bias table, N = window_size^2, row-major tokens."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing='ij'))
    coords = coords.flatten(1)  # 2, N
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
    return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


def build_official_shift_mask(height: int, width: int, window_size: int, shift_size: int,
                              device: Optional[torch.device] = None) -> Tensor:
    """The official channel-first Swin's shifted-window mask for an (height, width) map: (nW, N, N) float32, built
    on ``device`` (default CPU).

    Derivation of the official rule (facts in the spec, §1b Quirk 2): region labels end up depending only on the
    window-row and on the token's in-window column ``j``. Windows outside the last window-row are unmasked; in the
    last window-row, tokens with ``j < window_size - shift_size`` attend only to each other, and likewise the rest.
    Windows are ordered row-major (window-row outer), tokens row-major inside a window.
    """
    if height % window_size or width % window_size:
        raise ValueError(f'feature map {height}x{width} is not a multiple of the window size {window_size}')
    n_rows, n_cols = height // window_size, width // window_size
    j = torch.arange(window_size * window_size, device=device) % window_size  # in-window column of each token
    last_row_label = (j >= window_size - shift_size).long() + 1  # 1 or 2
    labels = torch.zeros(n_rows, n_cols, window_size * window_size, dtype=torch.long, device=device)
    labels[-1] = last_row_label
    labels = labels.reshape(n_rows * n_cols, -1)
    differ = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(differ.shape, dtype=torch.float32, device=device).masked_fill(differ, MASK_VALUE)


SHIFT_MASK_CACHE_BYTES = 32 * 2**20
"""Shift masks (H * W * window² elements each) up to this size are cached per size, device and dtype (8 at most:
at most 256 MiB of device memory for the life of the process); larger ones, from big untiled inputs, are built on the
device for each call and freed. The SwinIR pre-upsampler's masks follow the same rule in a cache of their own (so
both together hold at most 512 MiB)."""


def capturing_cuda_graph(device: torch.device) -> bool:
    """Whether ``device`` is a CUDA device whose current stream is capturing a graph (False while ``torch.compile``
    traces: it traces through the caches anyway)."""
    return (torch.device(device).type == 'cuda' and not torch.compiler.is_compiling()
            and torch.cuda.is_current_stream_capturing())


@functools.lru_cache(maxsize=8)
def _cached_shift_mask(height: int, width: int, window_size: int, shift_size: int, device: torch.device,
                       dtype: torch.dtype) -> Tensor:
    return build_official_shift_mask(height, width, window_size, shift_size, device).to(dtype)


def official_shift_mask(height: int, width: int, window_size: int, shift_size: int, device: torch.device,
                        dtype: torch.dtype) -> Tensor:
    """:func:`build_official_shift_mask` on ``device`` in ``dtype``, built once per combination and cached (up to
    :data:`SHIFT_MASK_CACHE_BYTES`).

    The cache means no host work and no host-to-device copy inside a sampling loop. Under ``torch.compile`` the
    cache is traced through, and during a CUDA-graph capture it is bypassed: the mask is then built inside the graph,
    on ``device`` (no host tensors, no copy), so a graph never holds the address of a cached mask that a later
    eviction frees.
    """
    if (height * width * window_size**2 * dtype.itemsize > SHIFT_MASK_CACHE_BYTES
            or capturing_cuda_graph(device)):
        return build_official_shift_mask(height, width, window_size, shift_size, device).to(dtype)
    return _cached_shift_mask(height, width, window_size, shift_size, torch.device(device), dtype)


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """(B, C, H, W) -> (B * nW, window_size^2, C); windows row-major, tokens row-major inside a window."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // window_size, window_size, w // window_size, window_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(-1, window_size * window_size, c)


def window_reverse(windows: Tensor, window_size: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nW, window_size^2, C) -> (B, C, H, W)."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window_size, width // window_size, window_size, window_size, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(-1, c, height, width)


def attend_windows(q: Tensor, k: Tensor, v: Tensor, position_bias: Tensor, mask: Optional[Tensor] = None, *,
                   scale: Optional[float] = None, dropout_p: float = 0.0) -> Tensor:
    """Window self-attention through ``scaled_dot_product_attention`` with the relative-position bias (and shift mask)
    as an additive float mask.

    Args:
        q, k, v: (B * nW, heads, N, d), windows of one image consecutive (as :func:`window_partition` orders them).
        position_bias: (heads, N, N).
        mask: (nW, N, N) additive shift mask, or None. With a mask the windows are folded into the heads, so that one
            (1, nW * heads, N, N) mask serves the whole batch (no per-image copy of it).
        scale, dropout_p: as ``scaled_dot_product_attention`` (None: 1 / sqrt(d)).

    Returns:
        (B * nW, N, heads * d).
    """
    bn, heads, n, d = q.shape
    if mask is None:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=position_bias.unsqueeze(0).to(q.dtype), scale=scale,
                                             dropout_p=dropout_p)
        return out.transpose(1, 2).reshape(bn, n, heads * d)
    n_windows = mask.shape[0]
    bias = (position_bias.unsqueeze(0) + mask.unsqueeze(1)).reshape(1, n_windows * heads, n, n).to(q.dtype)
    fold = (bn // n_windows, n_windows * heads, n, d)
    out = F.scaled_dot_product_attention(q.reshape(fold), k.reshape(fold), v.reshape(fold), attn_mask=bias,
                                         scale=scale, dropout_p=dropout_p)
    # (B, nW * heads, N, d) in whatever memory layout the kernel returns (CUDA's memory-efficient kernel gives a
    # transposed one, which a .view cannot take once B > 1) -> (B * nW, N, heads * d)
    return out.unflatten(1, (n_windows, heads)).transpose(2, 3).reshape(bn, n, heads * d)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with the Swin relative-position bias (official key names)."""

    def __init__(self, *, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1)**2, num_heads))
        self.register_buffer('relative_position_index', relative_position_index(window_size).clone())
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=.02)

    def position_bias(self) -> Tensor:
        """(num_heads, N, N) relative-position bias gathered from the table."""
        n = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """x: (B * nW, N, C) windows; mask: (nW, N, N) additive or None. Returns (B * nW, N, C)."""
        bn, n, c = x.shape
        heads = self.num_heads
        q, k, v = self.qkv(x).view(bn, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)  # (bn, h, N, d)
        return self.proj(attend_windows(q, k, v, self.position_bias(), mask))


class ConvMlp(nn.Module):
    """1x1-conv MLP: fc1 -> GELU -> fc2 on (B, C, H, W)."""

    def __init__(self, *, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """One channel-first Swin block: GN -> (shifted) window attention -> residual; GN -> conv MLP -> residual.

    ``resolution`` is the size the block is built for; it fixes the window and shift (construction-time rule) and
    the shape of the persistent ``attn_mask`` buffer kept for checkpoint compatibility (never read in ``forward``).
    """

    def __init__(self, *, dim: int, resolution: int, num_heads: int, window_size: int, shift_size: int,
                 mlp_ratio: float):
        super().__init__()
        if resolution <= window_size:
            shift_size, window_size = 0, resolution
        if not 0 <= shift_size < window_size:
            raise ValueError(f'shift_size {shift_size} must be in [0, window_size {window_size})')
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = GroupNorm32(32, dim)
        self.attn = WindowAttention(dim=dim, window_size=window_size, num_heads=num_heads)
        self.norm2 = GroupNorm32(32, dim)
        self.mlp = ConvMlp(dim=dim, hidden_dim=int(dim * mlp_ratio))
        if shift_size > 0:
            mask = build_official_shift_mask(resolution, resolution, window_size, shift_size)
            self.register_buffer('attn_mask', mask)
        else:
            self.attn_mask = None

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) with H, W multiples of the window size. Returns the same shape."""
        _, _, h, w = x.shape
        shortcut = x
        x = self.norm1(x)
        mask = None
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(2, 3))
            mask = official_shift_mask(h, w, self.window_size, self.shift_size, x.device, torch.float32)
        windows = self.attn(window_partition(x, self.window_size), mask=mask)
        x = window_reverse(windows, self.window_size, h, w)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(2, 3))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Conv1x1Projection(nn.Module):
    """A 1x1 conv under the key ``proj`` (the official patch (un)embedding with patch size 1 and no norm)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class SwinLayer(nn.Module):
    """``patch_embed`` (1x1 conv to ``embed_dim``) -> ``depth`` Swin blocks (shift 0, w/2, 0, ...) -> ``patch_unembed``.

    No residual around the layer (as in the official model). ``use_checkpoint`` recomputes each block in backward.
    """

    def __init__(self, *, in_channels: int, embed_dim: int, num_heads: int, window_size: int, depth: int,
                 resolution: int, mlp_ratio: float, use_checkpoint: bool = False):
        super().__init__()
        self.patch_embed = Conv1x1Projection(in_channels, embed_dim)
        self.blocks = nn.ModuleList([
            SwinBlock(dim=embed_dim, resolution=resolution, num_heads=num_heads, window_size=window_size,
                      shift_size=0 if i % 2 == 0 else window_size // 2, mlp_ratio=mlp_ratio) for i in range(depth)
        ])
        self.patch_unembed = Conv1x1Projection(embed_dim, in_channels)
        self.use_checkpoint = use_checkpoint

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        for block in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.patch_unembed(x)
