"""LPIPS (Zhang et al. 2018, VGG variant) as a BasicSR loss, from local weight files only (never a download).

Two files are needed (their paths are options):

* ``vgg_path``: torchvision's ImageNet VGG16 weights (``vgg16-397923af.pth``; only the ``features.*`` entries are
  used, so a file holding just those works too);
* ``lin_path``: the LPIPS v0.1 linear-layer weights for VGG (the ``lpips`` package ships them as
  ``lpips/weights/v0.1/vgg.pth``; keys ``lin{0..4}.model.1.weight``).

The distance: both images in [0, 1] -> [-1, 1] -> LPIPS' fixed shift/scale -> VGG16 ``relu1_2, relu2_2, relu3_3,
relu4_3, relu5_3`` -> unit-normalise each feature vector over channels -> squared difference -> per-layer 1x1 linear
weighting (no bias) -> spatial mean -> sum over layers. Gradients flow to ``pred``; the network itself is frozen.
"""
from __future__ import annotations

import os
from typing import Dict, List

import torch
from torch import Tensor, nn

from basicsr.utils.registry import LOSS_REGISTRY

from lpnsr_arch.weights import read_state_dict

__all__ = ['LPNSRLPIPSLoss', 'VGG16_CONFIG', 'build_vgg16_features', 'DEFAULT_VGG_PATH', 'DEFAULT_LIN_PATH']

DEFAULT_VGG_PATH = 'experiments/pretrained_models/vgg16-397923af.pth'
DEFAULT_LIN_PATH = 'experiments/pretrained_models/lpips_vgg_v0.1.pth'
#: VGG16 ("configuration D") feature layers: channel counts, 'M' = 2x2 max-pool (torchvision's layer indices).
VGG16_CONFIG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512)
#: the end index (exclusive) in ``features`` of each LPIPS tap: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
TAP_ENDS = (4, 9, 16, 23, 30)
TAP_CHANNELS = (64, 128, 256, 512, 512)
#: LPIPS' input normalisation for images in [-1, 1]: (x - shift) / scale.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
REDUCTIONS = ('mean', 'sum', 'none')


def build_vgg16_features() -> nn.Sequential:
    """VGG16's convolutional trunk with torchvision's module indices (so ``features.N.*`` keys load as they are)."""
    layers: List[nn.Module] = []
    in_channels = 3
    for item in VGG16_CONFIG:
        if item == 'M':
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            in_channels = item
    return nn.Sequential(*layers)


def _require_file(path: str, what: str, option: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f'LPNSRLPIPSLoss: {what} not found at {path!r} (option {option}). LPIPS never '
                                'downloads: put the file there, point the option at it, or drop the perceptual loss '
                                'from the training options.')


def _vgg_features_state(path: str) -> Dict[str, Tensor]:
    state = read_state_dict(path)
    features = {k[len('features.'):]: v for k, v in state.items() if k.startswith('features.')}
    return features or state


def _lin_state(path: str) -> Dict[str, Tensor]:
    """Map the lpips package keys ``lin{k}.model.1.weight`` (or plain ``lin{k}.weight``) to ``{k}.weight``."""
    state = read_state_dict(path)
    mapped = {}
    for key, value in state.items():
        parts = key.split('.')
        if parts[0].startswith('lin') and parts[0][3:].isdigit() and parts[-1] == 'weight':
            mapped[f'{parts[0][3:]}.weight'] = value
    return mapped


@LOSS_REGISTRY.register()
class LPNSRLPIPSLoss(nn.Module):
    """LPIPS-VGG distance between ``pred`` and ``target`` (B, 3, H, W) in [0, 1] (H, W >= 16).

    Args:
        loss_weight: multiplies the loss.
        vgg_path: VGG16 ImageNet weights (see the module docstring).
        lin_path: LPIPS v0.1 VGG linear weights.
        reduction: ``'mean'`` over the batch (the official training), ``'sum'``, or ``'none'`` (per sample, (B,)).
    """

    def __init__(self,
                 *,
                 loss_weight: float = 1.0,
                 vgg_path: str = DEFAULT_VGG_PATH,
                 lin_path: str = DEFAULT_LIN_PATH,
                 reduction: str = 'mean'):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f'LPNSRLPIPSLoss: reduction must be one of {REDUCTIONS}, got {reduction!r}')
        _require_file(vgg_path, 'the VGG16 backbone weights (torchvision vgg16-397923af.pth)', 'vgg_path')
        _require_file(lin_path, 'the LPIPS v0.1 VGG linear weights (lpips/weights/v0.1/vgg.pth)', 'lin_path')
        self.loss_weight = float(loss_weight)
        self.reduction = reduction
        self.features = build_vgg16_features()
        self.features.load_state_dict(_vgg_features_state(vgg_path), strict=True)
        self.lins = nn.ModuleList(nn.Conv2d(ch, 1, kernel_size=1, bias=False) for ch in TAP_CHANNELS)
        self.lins.load_state_dict(_lin_state(lin_path), strict=True)
        self.register_buffer('shift', torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('scale', torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> 'LPNSRLPIPSLoss':
        """The metric network has no training mode (kept in eval whatever the caller asks)."""
        return super().train(False)

    def _taps(self, img01: Tensor) -> List[Tensor]:
        """The unit-normalised VGG features at the five taps, float32 (the convolutions follow any autocast; the
        normalisation is done in float32, as autocast does it on CUDA)."""
        x = ((img01 * 2 - 1) - self.shift) / self.scale
        taps = []
        start = 0
        for end in TAP_ENDS:
            x = self.features[start:end](x)
            feature = x.float()
            taps.append(feature / (feature.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
            start = end
        return taps

    def distance(self, pred: Tensor, target: Tensor) -> Tensor:
        """Per-sample LPIPS (B,), float32. Under autocast the VGG convolutions run in its dtype (the official
        trainer: fp16 on CUDA); with bf16 the features' rounding (8-bit mantissa) inflates the distance of nearly
        identical images (+35 % at a noise of std 0.003 in a check here, CPU), not that of clearly different ones."""
        if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
            raise ValueError(f'LPNSRLPIPSLoss expects two (B, 3, H, W) images of one shape, got '
                             f'{tuple(pred.shape)} and {tuple(target.shape)}')
        pred_taps = self._taps(pred.float())
        target_taps = self._taps(target.float())
        with torch.autocast(device_type=pred.device.type, enabled=False):  # the weighted distances in float32
            layers = [lin((p - t).pow(2)).mean(dim=(1, 2, 3)) for lin, p, t in zip(self.lins, pred_taps, target_taps)]
        return torch.stack(layers, dim=0).sum(dim=0)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        per_sample = self.distance(pred, target)
        if self.reduction == 'mean':
            per_sample = per_sample.mean()
        elif self.reduction == 'sum':
            per_sample = per_sample.sum()
        return self.loss_weight * per_sample
