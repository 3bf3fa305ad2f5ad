"""The ResShift Swin-UNet denoiser: predicts x0 from the scaled latent x_t, the timestep and the LR image.

State-dict compatible with the official ``UNetModelSwin`` checkpoints (e.g. ``resshift_realsrx4_s4_v3.pth``).
Defaults are the official v3 configuration (118,593,583 parameters).
"""
from __future__ import annotations

from typing import Optional, Sequence

from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor

from lpnsr_arch.archs.unet_blocks import SwinUNet


@ARCH_REGISTRY.register()
class LPNSRResShiftUNet(SwinUNet):
    """x0-predicting denoiser ``forward(x, timesteps, lq) -> x0``.

    Args: the official ``UNetModelSwin`` arguments (see :class:`~lpnsr_arch.archs.unet_blocks.SwinUNet`), plus
    ``use_checkpoint`` (activation checkpointing of the Swin blocks).

    Shapes: ``x`` (B, in_channels, h, w) is ``x_t`` already divided by the diffusion's input scale; ``timesteps``
    int64 (B,) raw step indices; ``lq`` (B, 3, h, w) the LR image in [-1, 1] (h, w: multiples of ``size_multiple``).
    Returns the x0 prediction (B, out_channels, h, w), unclamped.
    """

    def __init__(self, *, image_size: int = 64, in_channels: int = 3, model_channels: int = 160,
                 out_channels: int = 3, num_res_blocks: Sequence[int] | int = (2, 2, 2, 2),
                 attention_resolutions: Sequence[int] = (64, 32, 16, 8), dropout: float = 0.0,
                 channel_mult: Sequence[int] = (1, 2, 2, 4), conv_resample: bool = True, dims: int = 2,
                 use_fp16: bool = False, num_heads: int = 1, num_head_channels: int = 32,
                 use_scale_shift_norm: bool = True, resblock_updown: bool = False, swin_depth: int = 2,
                 swin_embed_dim: int = 192, window_size: int = 8, mlp_ratio: float = 4.0, patch_norm: bool = False,
                 cond_lq: bool = True, cond_mask: bool = False, lq_size: int = 64, use_checkpoint: bool = False):
        super().__init__(image_size=image_size, in_channels=in_channels, model_channels=model_channels,
                         out_channels=out_channels, num_res_blocks=num_res_blocks,
                         attention_resolutions=attention_resolutions, dropout=dropout, channel_mult=channel_mult,
                         num_heads=num_heads, num_head_channels=num_head_channels,
                         use_scale_shift_norm=use_scale_shift_norm, swin_depth=swin_depth,
                         swin_embed_dim=swin_embed_dim, window_size=window_size, mlp_ratio=mlp_ratio, cond_lq=cond_lq,
                         lq_size=lq_size, use_checkpoint=use_checkpoint, patch_norm=patch_norm,
                         conv_resample=conv_resample, resblock_updown=resblock_updown, dims=dims, use_fp16=use_fp16,
                         cond_mask=cond_mask)
        self.latent_channels = in_channels

    def forward(self, x: Tensor, timesteps: Tensor, lq: Optional[Tensor] = None) -> Tensor:
        return self.run(x, timesteps, lq)
