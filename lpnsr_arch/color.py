"""Colour correction of a super-resolved image against its (bicubic-upsampled) low-resolution input.

Diffusion SR drifts in colour: the output keeps the right detail but its low frequencies (mean colour, shading) shift.
The fix used by LPNSR/ResShift keeps the high frequencies of the SR image and takes the low frequencies from the
reference (the bicubic-upsampled LR image): :func:`wavelet_color_fix`. :func:`adain_color_fix` is the cruder
alternative (per-channel mean/std matching).

All functions are pure, work on any device, and take/return float images shaped (B, C, H, W).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['wavelet_blur', 'wavelet_decomposition', 'wavelet_lowpass', 'wavelet_color_fix', 'adain_color_fix',
           'WAVELET_LEVELS']

WAVELET_LEVELS = 5
"""The number of decomposition levels of the official colour correction (dilations 1, 2, 4, 8, 16)."""

_KERNEL_CACHE: Dict[Tuple[int, torch.device, torch.dtype], Tensor] = {}


def _blur_kernel(channels: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The 3x3 binomial kernel ``[1,2,1]^T [1,2,1] / 16`` as a depthwise weight (channels, 1, 3, 3), cached."""
    key = (channels, torch.device(device), dtype)
    kernel = _KERNEL_CACHE.get(key)
    if kernel is None:
        taps = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
        kernel_2d = torch.outer(taps, taps) / 16.0
        kernel = kernel_2d.to(device=device, dtype=dtype).expand(channels, 1, 3, 3).contiguous()
        _KERNEL_CACHE[key] = kernel
    return kernel


def _check_image(name: str, image: Tensor) -> None:
    if image.ndim != 4:
        raise ValueError(f'{name} must be shaped (B, C, H, W), got {tuple(image.shape)}')
    if not image.is_floating_point():
        raise TypeError(f'{name} must be a floating-point tensor, got {image.dtype}')


def wavelet_blur(image: Tensor, dilation: int) -> Tensor:
    """One low-pass level: the binomial 3x3 kernel dilated by ``dilation``, on a replicate-padded image.

    Args:
        image: (B, C, H, W) float, any range.
        dilation: the spacing of the kernel taps (the official levels use 1, 2, 4, 8, 16).

    Returns:
        The blurred image, same shape and dtype.
    """
    _check_image('image', image)
    channels = image.shape[1]
    padded = F.pad(image, (dilation, dilation, dilation, dilation), mode='replicate')
    return F.conv2d(padded, _blur_kernel(channels, image.device, image.dtype), groups=channels, dilation=dilation)


def wavelet_decomposition(image: Tensor, levels: int = WAVELET_LEVELS) -> Tuple[Tensor, Tensor]:
    """Split ``image`` into (high, low) frequencies with ``levels`` dilated blurs: ``high + low == image``.

    Level ``i`` blurs with dilation ``2**i``; the high part accumulates what each blur removes.

    Args:
        image: (B, C, H, W) float.
        levels: the number of blur levels (>= 1).

    Returns:
        ``(high, low)``, both shaped like ``image``.
    """
    if levels < 1:
        raise ValueError(f'levels must be >= 1, got {levels}')
    high = torch.zeros_like(image)
    low = image
    for level in range(levels):
        blurred = wavelet_blur(low, 2**level)
        high = high + (low - blurred)
        low = blurred
    return high, low


def wavelet_lowpass(image: Tensor, levels: int = WAVELET_LEVELS) -> Tensor:
    """The ``low`` part of :func:`wavelet_decomposition` alone (one image-sized buffer at a time)."""
    if levels < 1:
        raise ValueError(f'levels must be >= 1, got {levels}')
    for level in range(levels):
        image = wavelet_blur(image, 2**level)
    return image


def wavelet_color_fix(sr01: Tensor, reference01: Tensor, levels: int = WAVELET_LEVELS,
                      strip: Optional[int] = 512) -> Tensor:
    """LPNSR's colour correction: the high frequencies of ``sr01`` plus the low frequencies of ``reference01``.

    ``high(sr) + low(ref) = sr - low(sr) + low(ref)``. The low-pass is local (radius ``2**levels - 1`` px), so the
    image is processed in horizontal strips of ``strip`` rows with a ``2**levels`` halo: the result is the same as
    on the whole image, and the working memory is bounded by the strip, not the image (``strip=None``: one piece).

    Args:
        sr01: the super-resolved image, (B, C, H, W) float in [0, 1].
        reference01: the colour reference (the bicubic-upsampled LR image), same shape, in [0, 1].
        levels: wavelet levels (the official value is 5).
        strip: rows per strip.

    Returns:
        The corrected image, (B, C, H, W), clamped to [0, 1].
    """
    _check_image('sr01', sr01)
    _check_image('reference01', reference01)
    if sr01.shape != reference01.shape:
        raise ValueError(f'sr01 {tuple(sr01.shape)} and reference01 {tuple(reference01.shape)} must have one shape')
    height = sr01.shape[-2]
    if strip is None or height <= strip:
        return _fix_piece(sr01, reference01.to(sr01.dtype), levels)
    halo = 2**levels
    out = torch.empty_like(sr01)
    for top in range(0, height, strip):
        bottom = min(top + strip, height)
        lo, hi = max(0, top - halo), min(height, bottom + halo)
        piece = _fix_piece(sr01[:, :, lo:hi], reference01[:, :, lo:hi].to(sr01.dtype), levels)
        out[:, :, top:bottom] = piece[:, :, top - lo:top - lo + bottom - top]
    return out


def _fix_piece(sr01: Tensor, reference01: Tensor, levels: int) -> Tensor:
    # sr - low(sr) + low(ref) == sr + low(ref - sr): the low-pass is linear, so one pass instead of two
    return (sr01 + wavelet_lowpass(reference01 - sr01, levels)).clamp_(0.0, 1.0)


def adain_color_fix(sr01: Tensor, reference01: Tensor, eps: float = 1e-5) -> Tensor:
    """Match the per-image, per-channel mean and standard deviation of ``sr01`` to those of ``reference01``.

    Args:
        sr01: (B, C, H, W) float in [0, 1].
        reference01: (B, C, H', W') float in [0, 1] (the size may differ: only statistics are used).
        eps: added to the variances before the square root.

    Returns:
        The corrected image, shaped like ``sr01``, clamped to [0, 1].
    """
    _check_image('sr01', sr01)
    _check_image('reference01', reference01)
    if sr01.shape[:2] != reference01.shape[:2]:
        raise ValueError(f'sr01 {tuple(sr01.shape)} and reference01 {tuple(reference01.shape)} differ in B or C')
    sr_var, sr_mean = torch.var_mean(sr01, dim=(2, 3), keepdim=True, correction=0)
    ref_var, ref_mean = torch.var_mean(reference01.to(sr01.dtype), dim=(2, 3), keepdim=True, correction=0)
    normalised = (sr01 - sr_mean) / torch.sqrt(sr_var + eps)
    return (normalised * torch.sqrt(ref_var + eps) + ref_mean).clamp_(0.0, 1.0)
