"""LPNSR's learned noise predictor: an LR-guided Swin-UNet giving a diagonal Gaussian over the noise of a reverse step.

Inputs are the raw (un-scaled) current latent ``z_t``, the denoiser's x0 prediction and the LR image; the output
conv gives ``2 * out_channels`` maps split into mean and log-variance (clamped to [-30, 20]). State-dict compatible
with the official ``SwinUNetNoisePredictor`` (``noise_predictor_v2.pth``; 118,602,226 parameters at the defaults).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor

from lpnsr_arch.archs.unet_blocks import SwinUNet

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0
MODES = ('sample', 'mean', 'dist', 'raw')


@ARCH_REGISTRY.register()
class LPNSRNoisePredictor(SwinUNet):
    """``forward(z_t, pred_x0, lq, timesteps, mode=...)``.

    Args: the Swin-UNet arguments as in :class:`~lpnsr_arch.archs.resshift_unet_arch.LPNSRResShiftUNet`, where
    ``in_channels`` is the latent channel count (the first conv sees ``2 * in_channels + 3``), and ``double_z``
    (output mean and log-variance; ``False`` builds a network with no distribution: only ``mode='raw'`` works,
    returning the ``out_channels`` map).

    Shapes: ``z_t``, ``pred_x0`` (B, C, h, w) latents; ``lq`` (B, 3, h*r, w*r) LR in [-1, 1] with r = ``lq_size /
    image_size`` (1 in the official configurations; the official code's pixel-unshuffle of an LR of another size
    cannot feed its first conv and is not kept: a wrong size is a ``ValueError``); ``timesteps`` int64 (B,).
    Modes: ``'dist'`` -> ``(mean, logvar)``; ``'mean'`` -> mean; ``'sample'`` -> ``mean + exp(logvar / 2) * noise``
    where ``noise`` is given or drawn with ``generator`` (``randn_like`` when neither); ``'raw'`` (``double_z=False``
    only) -> the output map.
    """

    def __init__(self, *, image_size: int = 64, in_channels: int = 3, model_channels: int = 160,
                 out_channels: int = 3, num_res_blocks: Sequence[int] | int = (2, 2, 2, 2),
                 attention_resolutions: Sequence[int] = (64, 32, 16, 8), dropout: float = 0.0,
                 channel_mult: Sequence[int] = (1, 2, 2, 4), conv_resample: bool = True, dims: int = 2,
                 use_fp16: bool = False, num_heads: int = -1, num_head_channels: int = 32,
                 use_scale_shift_norm: bool = True, resblock_updown: bool = False, swin_depth: int = 2,
                 swin_embed_dim: int = 192, window_size: int = 8, mlp_ratio: float = 4.0, patch_norm: bool = False,
                 cond_lq: bool = True, cond_mask: bool = False, lq_size: int = 64, double_z: bool = True,
                 use_checkpoint: bool = False):
        super().__init__(image_size=image_size, in_channels=2 * in_channels, model_channels=model_channels,
                         out_channels=2 * out_channels if double_z else out_channels, num_res_blocks=num_res_blocks,
                         attention_resolutions=attention_resolutions, dropout=dropout, channel_mult=channel_mult,
                         num_heads=num_heads, num_head_channels=num_head_channels,
                         use_scale_shift_norm=use_scale_shift_norm, swin_depth=swin_depth,
                         swin_embed_dim=swin_embed_dim, window_size=window_size, mlp_ratio=mlp_ratio, cond_lq=cond_lq,
                         lq_size=lq_size, use_checkpoint=use_checkpoint, patch_norm=patch_norm,
                         conv_resample=conv_resample, resblock_updown=resblock_updown, dims=dims, use_fp16=use_fp16,
                         cond_mask=cond_mask)
        self.double_z = double_z
        self.latent_channels = in_channels

    def distribution(self, z_t: Tensor, pred_x0: Tensor, lq: Tensor, timesteps: Tensor) -> Tuple[Tensor, Tensor]:
        """(mean, logvar), each (B, out_channels, h, w); logvar clamped to [-30, 20]."""
        if not self.double_z:
            raise ValueError('this noise predictor was built with double_z=False: it has no distribution')
        out = self.run(torch.cat([z_t, pred_x0], dim=1), timesteps, lq)
        mean, logvar = out.chunk(2, dim=1)
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def forward(self, z_t: Tensor, pred_x0: Tensor, lq: Tensor, timesteps: Tensor, *, mode: str = 'sample',
                noise: Optional[Tensor] = None,
                generator: Optional[torch.Generator] = None) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        if (mode == 'raw') != (not self.double_z):
            raise ValueError(f"mode {mode!r} needs double_z={mode != 'raw'}; this predictor has "
                             f'double_z={self.double_z}')
        if mode == 'raw':
            return self.run(torch.cat([z_t, pred_x0], dim=1), timesteps, lq)
        mean, logvar = self.distribution(z_t, pred_x0, lq, timesteps)
        if mode == 'dist':
            return mean, logvar
        if mode == 'mean':
            return mean
        if noise is None:
            noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype,
                                device=generator.device if generator is not None else mean.device).to(mean.device)
        return mean + torch.exp(0.5 * logvar) * noise
