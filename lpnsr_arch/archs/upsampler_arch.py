"""Pre-upsamplers: the starting point y of the reverse chain is the encoded pre-upsampled LR image.

LPNSR uses SwinIR-L; BasicSR's own ``SwinIR`` is key- and output-identical to it (spec §1e) but lacks the padding to
a multiple of the window and the final crop that the official forward has. :class:`LPNSRSwinIR` adds just that.
:class:`LPNSRBicubicUpsampler` is the official *training* pre-upsampler. BasicSR's ``RRDBNet`` needs no wrapper;
:class:`LPNSRBicubicResidualRRDBNet` is an RRDBNet that learns a correction of the bicubic upscale (the demonstration
model's pre-upsampler: it starts training at the bicubic result instead of a random image).
All take images in [0, 1] and return the upscaled image, not clamped.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from basicsr.archs.rrdbnet_arch import RRDBNet
from basicsr.archs.swinir_arch import SwinIR
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn


def bicubic_upscale(x: Tensor, scale: int) -> Tensor:
    """Bicubic interpolation by ``scale`` with ``align_corners=False`` (the official up-sampling), not clamped."""
    return F.interpolate(x, scale_factor=scale, mode='bicubic', align_corners=False)


@ARCH_REGISTRY.register()
class LPNSRSwinIR(SwinIR):
    """BasicSR ``SwinIR`` with the official reflect padding to a multiple of ``window_size`` and the crop back.

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
