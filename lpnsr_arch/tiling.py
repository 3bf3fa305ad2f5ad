"""Tiled processing with Gaussian blending (LPNSR's ``ImageSpliterTh`` rule, accumulated on the device).

A large LR image is cut into overlapping square tiles; each tile is super-resolved on its own (in batches), and the SR
tiles are blended with a separable Gaussian weight that is largest at the tile centre, so that no seam shows.

* :func:`tile_starts` / :func:`plan_tiles`: the official tile positions (clamped to the border, duplicates removed).
* :func:`gaussian_kernel_1d` / :func:`blend_weights`: the official blending weights (cached per size and device).
* :func:`process_tiled`: cut, process in batches through a callable, blend (float32 or float64 on the device).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ['Tile', 'tile_starts', 'plan_tiles', 'gaussian_kernel_1d', 'blend_weights', 'process_tiled', 'TileFn',
           'count_tiles']


@dataclass(frozen=True)
class Tile:
    """One LR tile: its index in the plan (row-major) and its box ``[top:top+height, left:left+width]``."""
    index: int
    top: int
    left: int
    height: int
    width: int


TileFn = Callable[[Tensor, Sequence[Tile]], Tensor]
"""``fn(lr_tiles, tiles) -> sr_tiles``: ``lr_tiles`` is (len(tiles) * B, C, h, w) (tile-major: the B images of the
first tile, then those of the second...), the result is (len(tiles) * B, C_out, h * scale, w * scale)."""


def tile_starts(length: int, tile: int, stride: int) -> List[int]:
    """The official start positions along one axis.

    ``[0]`` if ``length <= tile``; otherwise ``range(0, length, stride)`` with every start that would overflow
    replaced by ``length - tile``, duplicates removed in order.
    """
    if tile < 1 or stride < 1:
        raise ValueError(f'tile ({tile}) and stride ({stride}) must be >= 1')
    if length <= tile:
        return [0]
    starts: List[int] = []
    for start in range(0, length, stride):
        start = min(start, length - tile)
        if start not in starts:
            starts.append(start)
    return starts


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> List[Tile]:
    """Row-major tiles (height outer) of side ``min(tile, height)`` x ``min(tile, width)`` covering the image.

    ``overlap`` is the number of pixels shared by neighbouring tiles (the stride is ``tile - overlap``); the
    official LPNSR setting is ``tile=256, overlap=128``.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f'tile_overlap must be in [0, tile), got overlap={overlap}, tile={tile}')
    stride = tile - overlap
    tile_h, tile_w = min(tile, height), min(tile, width)
    tops, lefts = tile_starts(height, tile, stride), tile_starts(width, tile, stride)
    boxes = [(top, left) for top in tops for left in lefts]
    return [Tile(index, top, left, tile_h, tile_w) for index, (top, left) in enumerate(boxes)]


_KERNEL_CACHE: Dict[Tuple[int, torch.device, torch.dtype], Tensor] = {}


def gaussian_kernel_1d(size: int, device: torch.device | str = 'cpu', dtype: torch.dtype = torch.float64) -> Tensor:
    """The official blending kernel of ``size`` taps (cached per size, device and dtype).

    ``sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8``; an odd size gives the normalised Gaussian of ``size`` taps
    (OpenCV's ``getGaussianKernel``), an even size takes the ``size + 1`` kernel and drops its first tap without
    renormalising. Computed in float64, then cast.

    Returns:
        (size,) tensor of positive weights.
    """
    if size < 1:
        raise ValueError(f'kernel size must be >= 1, got {size}')
    key = (size, torch.device(device), dtype)
    kernel = _KERNEL_CACHE.get(key)
    if kernel is None:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
        taps = size + 1 if size % 2 == 0 else size
        offsets = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2
        full = torch.exp(-offsets**2 / (2 * sigma**2))
        full = full / full.sum()
        kernel = (full[1:] if size % 2 == 0 else full).to(device=device, dtype=dtype)
        _KERNEL_CACHE[key] = kernel
    return kernel


def blend_weights(height: int, width: int, device: torch.device | str = 'cpu',
                  dtype: torch.dtype = torch.float64) -> Tensor:
    """The 2-D blending weight of an SR tile: ``outer(k_height, k_width)``, shaped (1, 1, height, width)."""
    k_h = gaussian_kernel_1d(height, device, dtype)
    k_w = gaussian_kernel_1d(width, device, dtype)
    return torch.outer(k_h, k_w)[None, None]


def process_tiled(image: Tensor,
                  fn: TileFn,
                  *,
                  tile: int,
                  overlap: int,
                  scale: int,
                  tile_batch: int = 1,
                  exact: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> Tensor:
    """Run ``fn`` on overlapping tiles of ``image`` and blend the ``scale``-times larger results.

    Args:
        image: (B, C, H, W) input (any range).
        fn: the per-tile function (:data:`TileFn`); it receives up to ``tile_batch`` tiles at once.
        tile: LR tile side in pixels; an image no larger than ``tile`` on both axes is one tile.
        overlap: LR pixels shared by neighbouring tiles.
        scale: the output/input size ratio of ``fn``.
        tile_batch: how many tile positions go through ``fn`` in one call.
        exact: accumulate in float64 (the official precision) instead of float32.
        progress: called as ``progress(done_tiles, total_tiles)`` after each batch.

    Returns:
        (B, C_out, H * scale, W * scale) in float32 (float64 if ``exact``) on ``image.device``.
    """
    if image.ndim != 4:
        raise ValueError(f'image must be shaped (B, C, H, W), got {tuple(image.shape)}')
    if tile_batch < 1:
        raise ValueError(f'tile_batch must be >= 1, got {tile_batch}')
    batch, _, height, width = image.shape
    tiles = plan_tiles(height, width, tile, overlap)
    acc_dtype = torch.float64 if exact else torch.float32
    sr_h, sr_w = tiles[0].height * scale, tiles[0].width * scale
    weight = blend_weights(sr_h, sr_w, image.device, acc_dtype)
    accumulated: Tensor | None = None
    weight_sum = torch.zeros((1, 1, height * scale, width * scale), dtype=acc_dtype, device=image.device)
    for first in range(0, len(tiles), tile_batch):
        group = tiles[first:first + tile_batch]
        lr_tiles = torch.cat([image[:, :, t.top:t.top + t.height, t.left:t.left + t.width] for t in group])
        sr_tiles = fn(lr_tiles, group)
        expected = (len(group) * batch, sr_h, sr_w)
        if (sr_tiles.shape[0], *sr_tiles.shape[2:]) != expected:
            raise ValueError(f'the tile function returned {tuple(sr_tiles.shape)}, expected (N, C) + {expected[1:]} '
                             f'with N = {expected[0]} (scale {scale})')
        if accumulated is None:
            accumulated = torch.zeros((batch, sr_tiles.shape[1], height * scale, width * scale), dtype=acc_dtype,
                                      device=image.device)
        for position, t in enumerate(group):
            rows = slice(t.top * scale, t.top * scale + sr_h)
            cols = slice(t.left * scale, t.left * scale + sr_w)
            sr = sr_tiles[position * batch:(position + 1) * batch].to(acc_dtype)
            accumulated[:, :, rows, cols].add_(sr * weight)
            weight_sum[:, :, rows, cols].add_(weight)
        if progress is not None:
            progress(min(first + tile_batch, len(tiles)), len(tiles))
    assert accumulated is not None  # plan_tiles always returns at least one tile
    return accumulated.div_(weight_sum)


def count_tiles(height: int, width: int, tile: int, overlap: int) -> int:
    """How many tiles :func:`plan_tiles` makes (for progress bars and benchmarks)."""
    return len(plan_tiles(height, width, tile, overlap))
