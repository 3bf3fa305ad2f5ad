"""A weight-free "autoencoder" for training every stage from scratch: space-to-depth and back.

With ``factor = 4`` an HR image (B, 3, 4h, 4w) becomes a (B, 48, h, w) latent at the LR resolution, so the
diffusion runs on exact pixels (no pretrained VQ model, no reconstruction error), and the LR condition lines up
with the latent as in the VQ-f4 setting. ``factor = 1`` is the identity (pixel-space diffusion at HR size).
Use it with ``diffusion.latent_flag: false`` (pixel-space input scaling).
"""
from __future__ import annotations

import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn


@ARCH_REGISTRY.register()
class LPNSRPixelAutoencoder(nn.Module):
    """``encode``: pixel_unshuffle by ``factor``; ``decode``: pixel_shuffle. No parameters, no state."""

    def __init__(self, *, factor: int = 4, in_channels: int = 3):
        super().__init__()
        if factor < 1:
            raise ValueError(f'factor must be >= 1, got {factor}')
        self.downscale = factor
        self.latent_channels = in_channels * factor * factor

    def encode(self, x: Tensor) -> Tensor:
        """Image (B, C, H, W) in [-1, 1], H and W multiples of ``factor`` -> (B, C*f*f, H/f, W/f)."""
        if x.shape[-1] % self.downscale or x.shape[-2] % self.downscale:
            raise ValueError(f'image size {tuple(x.shape[-2:])} is not a multiple of the factor {self.downscale}')
        return F.pixel_unshuffle(x, self.downscale) if self.downscale > 1 else x

    def decode(self, z: Tensor, quantize: bool = True) -> Tensor:
        """Inverse of :meth:`encode` (``quantize`` is accepted for API parity and ignored)."""
        return F.pixel_shuffle(z, self.downscale) if self.downscale > 1 else z

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))
