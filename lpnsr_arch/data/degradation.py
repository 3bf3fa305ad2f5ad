"""The Real-ESRGAN second-order degradation, once, device-agnostic, built from BasicSR's own pieces.

Every place that synthesises LR images from HR images (the baseline training models, ``datasets/make_test_pairs.py``)
goes through :class:`SecondOrderDegradation`, so training and test pairs share one pipeline.

The random choices follow Real-ESRGAN: Python's ``random`` picks resize directions and modes, ``numpy.random`` draws
probabilities and scales, and torch's global generator draws noise and JPEG qualities. Seeding all three (for
example with ``basicsr.utils.set_random_seed``) makes the output reproducible.
"""
from __future__ import annotations

import difflib
import random
from typing import Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn import functional as F

from lpnsr_arch.compat import install_basicsr_fixes

install_basicsr_fixes()  # DiffJPEG must return contiguous tensors for the CPU filter2D below

from basicsr.data.degradations import random_add_gaussian_noise_pt, random_add_poisson_noise_pt  # noqa: E402
from basicsr.data.transforms import paired_random_crop  # noqa: E402
from basicsr.utils import DiffJPEG, USMSharp  # noqa: E402
from basicsr.utils.img_process_util import filter2D  # noqa: E402

#: Top-level option keys of a Real-ESRGAN recipe read by :class:`SecondOrderDegradation`, with their expected length
#: (``None``: a scalar probability).
DEGRADATION_KEYS: Dict[str, Optional[int]] = {
    'resize_prob': 3, 'resize_range': 2, 'gaussian_noise_prob': None, 'noise_range': 2, 'poisson_scale_range': 2,
    'gray_noise_prob': None, 'jpeg_range': 2,
    'second_blur_prob': None, 'resize_prob2': 3, 'resize_range2': 2, 'gaussian_noise_prob2': None,
    'noise_range2': 2, 'poisson_scale_range2': 2, 'gray_noise_prob2': None, 'jpeg_range2': 2,
}

#: This project's optional top-level degradation keys (see :class:`SecondOrderDegradation`).
OPTIONAL_DEGRADATION_KEYS = ('second_order_prob', 'bicubic_prob')

#: Real-ESRGAN x4plus values of :data:`DEGRADATION_KEYS` (used by the dataset scripts when no recipe is given).
REALESRGAN_X4PLUS_DEGRADATION: Dict[str, object] = {
    'resize_prob': [0.2, 0.7, 0.1], 'resize_range': [0.15, 1.5], 'gaussian_noise_prob': 0.5,
    'noise_range': [1, 30], 'poisson_scale_range': [0.05, 3], 'gray_noise_prob': 0.4, 'jpeg_range': [30, 95],
    'second_blur_prob': 0.8, 'resize_prob2': [0.3, 0.4, 0.3], 'resize_range2': [0.3, 1.2],
    'gaussian_noise_prob2': 0.5, 'noise_range2': [1, 25], 'poisson_scale_range2': [0.05, 2.5],
    'gray_noise_prob2': 0.4, 'jpeg_range2': [30, 95],
}

_RESIZE_MODES = ('area', 'bilinear', 'bicubic')
_RESIZE_DIRECTIONS = ('up', 'down', 'keep')
_BLUR_KERNEL_SIZE = 21  # RealESRGANDataset pads every kernel to 21x21


def validate_degradation_opt(opt: dict) -> Dict[str, object]:
    """Return the :data:`DEGRADATION_KEYS` entries of ``opt``; raise ``KeyError``/``ValueError`` naming a bad key,
    and a ``KeyError`` for a key that looks like a misspelt degradation key (``bicubic_prb``), which would otherwise
    be ignored while its default applies."""
    known = set(DEGRADATION_KEYS) | set(OPTIONAL_DEGRADATION_KEYS)
    for key in opt:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.85)
            if close:
                raise KeyError(f"unknown option '{key}'; did you mean the degradation option '{close[0]}'?")
    values = {}
    for key, length in DEGRADATION_KEYS.items():
        if key not in opt:
            raise KeyError(f"degradation option '{key}' is missing (expected at the top level of the options, "
                           f'as in Real-ESRGAN recipes)')
        value = opt[key]
        if length is None:
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"degradation option '{key}' must be a probability in [0, 1], got {value!r}")
        elif not isinstance(value, (list, tuple)) or len(value) != length:
            raise ValueError(f"degradation option '{key}' must be a list of {length} numbers, got {value!r}")
        values[key] = list(value) if length is not None else float(value)
    for key in ('resize_prob', 'resize_prob2'):
        if abs(sum(values[key]) - 1) > 1e-6:
            raise ValueError(f"degradation option '{key}' (up, down, keep) must sum to 1, got {values[key]}")
    return values


def _random_resize_factor(direction_probs: Sequence[float], factor_range: Sequence[float]) -> float:
    """Draw a resize factor: up in [1, max], down in [min, 1] or keep (1), with the given probabilities."""
    direction = random.choices(_RESIZE_DIRECTIONS, direction_probs)[0]
    if direction == 'up':
        return float(np.random.uniform(1, factor_range[1]))
    if direction == 'down':
        return float(np.random.uniform(factor_range[0], 1))
    return 1.0


def _random_resize_mode() -> str:
    return random.choice(_RESIZE_MODES)


def _add_random_noise(img: torch.Tensor, *, gaussian_prob: float, sigma_range: Sequence[float],
                      poisson_scale_range: Sequence[float], gray_prob: float) -> torch.Tensor:
    """Gaussian noise with probability ``gaussian_prob``, else Poisson noise; (B,3,h,w) in [0,1], clipped."""
    if np.random.uniform() < gaussian_prob:
        return random_add_gaussian_noise_pt(img, sigma_range=sigma_range, clip=True, rounds=False,
                                            gray_prob=gray_prob)
    return random_add_poisson_noise_pt(img, scale_range=poisson_scale_range, gray_prob=gray_prob, clip=True,
                                       rounds=False)


class SecondOrderDegradation(torch.nn.Module):
    """Real-ESRGAN's two rounds of blur, resize, noise and JPEG, then a final resize + sinc filter.

    Args:
        opt: options holding every key of :data:`DEGRADATION_KEYS` (extra keys are ignored), and optionally
            ``bicubic_prob``: the probability, per image, that the LR is instead the clean bicubic (antialiased)
            downscale of the GT, so that one model serves both real-world and bicubic inputs (default 0: as
            Real-ESRGAN); and ``second_order_prob``: the probability, per batch, of the second round of blur, resize
            and noise (ResShift's realsr recipe uses 0.5; default 1: always, as Real-ESRGAN). The final resize,
            sinc filter and JPEG are always applied.
        scale: super-resolution factor; the LR image is ``H // scale`` x ``W // scale``.
    """

    def __init__(self, *, opt: dict, scale: int) -> None:
        super().__init__()
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f'scale must be a positive integer, got {scale!r}')
        self.scale = scale
        self.settings = validate_degradation_opt(opt)
        self.bicubic_prob = float(opt.get('bicubic_prob', 0.0))
        if not 0 <= self.bicubic_prob <= 1:
            raise ValueError(f"degradation option 'bicubic_prob' must be a probability in [0, 1], "
                             f"got {self.bicubic_prob}")
        self.second_order_prob = float(opt.get('second_order_prob', 1.0))
        if not 0 <= self.second_order_prob <= 1:
            raise ValueError("degradation option 'second_order_prob' must be a probability in [0, 1], "
                             f'got {self.second_order_prob}')
        self.jpeger = DiffJPEG(differentiable=False)

    def min_gt_size(self) -> int:
        """Smallest GT side for which every reflect-padded 21x21 blur has enough pixels."""
        half_kernel = _BLUR_KERNEL_SIZE // 2
        smallest_factor = min(self.settings['resize_range'][0], 1.0)
        first_stage = int(np.ceil((half_kernel + 1) / smallest_factor))
        return max(first_stage, (half_kernel + 1) * self.scale)

    def _jpeg(self, img: torch.Tensor, quality_range: Sequence[float]) -> torch.Tensor:
        quality = img.new_zeros(img.size(0)).uniform_(*quality_range)
        return self.jpeger(torch.clamp(img, 0, 1), quality=quality)

    def _resize_back_and_sinc(self, img: torch.Tensor, size: Tuple[int, int],
                              sinc_kernel: torch.Tensor) -> torch.Tensor:
        img = F.interpolate(img, size=size, mode=_random_resize_mode())
        return filter2D(img, sinc_kernel)

    def _second_round(self, img: torch.Tensor, kernel2: torch.Tensor, gt_size: Tuple[int, int]) -> torch.Tensor:
        """The second blur (``second_blur_prob``), resize (relative to the LR size) and noise."""
        s = self.settings
        if np.random.uniform() < s['second_blur_prob']:
            img = filter2D(img, kernel2)
        factor = _random_resize_factor(s['resize_prob2'], s['resize_range2'])
        second_size = (int(gt_size[0] / self.scale * factor), int(gt_size[1] / self.scale * factor))
        img = F.interpolate(img, size=second_size, mode=_random_resize_mode())
        return _add_random_noise(img, gaussian_prob=s['gaussian_noise_prob2'], sigma_range=s['noise_range2'],
                                 poisson_scale_range=s['poisson_scale_range2'], gray_prob=s['gray_noise_prob2'])

    @torch.no_grad()
    def forward(self, gt: torch.Tensor, kernel1: torch.Tensor, kernel2: torch.Tensor,
                sinc_kernel: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Degrade a batch.

        Args:
            gt: (B,3,H,W) in [0,1], any device.
            kernel1, kernel2, sinc_kernel: (B,21,21) blur kernels as produced by RealESRGANDataset.

        Returns:
            ``(lq, clean)``: lq (B,3,H//scale,W//scale) in [0,1], float32, quantised to multiples of 1/255; clean (B,)
            bool, True where the LR is the plain bicubic downscale (``bicubic_prob``).
        """
        if gt.dim() != 4 or gt.size(1) != 3:
            raise ValueError(f'gt must be (B,3,H,W), got shape {tuple(gt.shape)}')
        height, width = gt.shape[-2:]
        if min(height, width) < self.min_gt_size():
            raise ValueError(f'gt is {height}x{width}, but this degradation needs sides of at least '
                             f'{self.min_gt_size()} px (21x21 kernels after resize_range[0] and x{self.scale})')
        s = self.settings
        with torch.autocast(device_type=gt.device.type, enabled=False):
            kernel1, kernel2, sinc_kernel = (k.to(device=gt.device, dtype=torch.float32)
                                             for k in (kernel1, kernel2, sinc_kernel))
            out = filter2D(gt.float(), kernel1)
            out = F.interpolate(out, scale_factor=_random_resize_factor(s['resize_prob'], s['resize_range']),
                                mode=_random_resize_mode())
            out = _add_random_noise(out, gaussian_prob=s['gaussian_noise_prob'], sigma_range=s['noise_range'],
                                    poisson_scale_range=s['poisson_scale_range'], gray_prob=s['gray_noise_prob'])
            out = self._jpeg(out, s['jpeg_range'])

            # no draw when the second round is certain, so the default keeps Real-ESRGAN's random stream
            if self.second_order_prob >= 1 or np.random.uniform() < self.second_order_prob:
                out = self._second_round(out, kernel2, (height, width))

            # [resize back + sinc] and JPEG in a random order (the other orders make twisted lines)
            lq_size = (height // self.scale, width // self.scale)
            if np.random.uniform() < 0.5:
                out = self._jpeg(self._resize_back_and_sinc(out, lq_size, sinc_kernel), s['jpeg_range2'])
            else:
                out = self._resize_back_and_sinc(self._jpeg(out, s['jpeg_range2']), lq_size, sinc_kernel)
            pick = torch.zeros(gt.size(0), dtype=torch.bool, device=gt.device)
            if self.bicubic_prob > 0:
                clean = F.interpolate(gt.float(), size=lq_size, mode='bicubic', antialias=True)
                pick = torch.from_numpy(np.random.uniform(size=gt.size(0)) < self.bicubic_prob).to(gt.device)
                out = torch.where(pick[:, None, None, None], clean, out)
            return (torch.clamp((out * 255.0).round(), 0, 255) / 255.0).contiguous(), pick


def training_gt_size(opt: Mapping) -> int:
    """The GT crop side of degraded training pairs: the top-level ``gt_size`` (Real-ESRGAN's key) or
    ``datasets.train.gt_size`` (BasicSR's); recipes may carry both, as Real-ESRGAN's do, but then they must agree.
    Raises ``KeyError`` when neither is given and ``ValueError`` when they differ or are not a positive integer."""
    top = opt.get('gt_size')
    in_dataset = ((opt.get('datasets') or {}).get('train') or {}).get('gt_size')
    if top is None and in_dataset is None:
        raise KeyError('option gt_size (the GT crop of degraded training pairs; top level or datasets.train) is '
                       'missing')
    if top is not None and in_dataset is not None and top != in_dataset:
        raise ValueError(f'gt_size {top} (top level) and datasets.train.gt_size {in_dataset} differ: give one, or '
                         'the same value in both')
    size = top if top is not None else in_dataset
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f'gt_size must be a positive integer, got {size!r}')
    return size


class TrainingPair(NamedTuple):
    """A synthesised training pair (see :func:`degrade_batch`); all tensors on the degradation's device."""

    lq: torch.Tensor  # (B,3,gt_size/scale,gt_size/scale) in [0,1]
    gt: torch.Tensor  # (B,3,gt_size,gt_size) in [0,1]: the crop of the plain GT
    clean: torch.Tensor  # (B,) bool: the LR is the clean bicubic downscale (``bicubic_prob``)
    gt_usm: Optional[torch.Tensor]  # the same crop of the sharpened GT (with ``usm_sharpener``), else None


KERNEL_KEYS = ('kernel1', 'kernel2', 'sinc_kernel')
"""The blur kernels of a RealESRGANDataset batch, each (B, 21, 21)."""


@torch.no_grad()
def degrade_batch(degradation: SecondOrderDegradation, data: Dict[str, torch.Tensor], device: torch.device, *,
                  gt_size: int, usm_sharpener: Optional[USMSharp] = None) -> TrainingPair:
    """Turn a RealESRGANDataset batch into a training pair on ``device``.

    Args:
        degradation: the degradation (already on ``device``).
        data: batch with ``gt`` (B,3,H,W) in [0,1] (H, W >= ``gt_size``) and ``kernel1``/``kernel2``/``sinc_kernel``
            (B,21,21).
        device: where the pair is made.
        gt_size: side of the GT crop; the LR crop is ``gt_size // degradation.scale``.
        usm_sharpener: if given, the LR is made from the unsharp-masked GT (as Real-ESRNet/Real-ESRGAN do) and
            ``gt_usm`` holds the sharpened GT's crop (Real-ESRNet's target with ``gt_usm: true``).

    Returns:
        a :class:`TrainingPair`: the same random crop of the LR, the plain GT and (if sharpened) the sharpened GT.
    """
    for key in ('gt', ) + KERNEL_KEYS:
        if key not in data:
            raise KeyError(f"batch has no '{key}': degrade_batch needs a RealESRGANDataset-style batch")
    gt = data['gt'].to(device)
    if min(gt.shape[-2:]) < gt_size:
        raise ValueError(f'training GT patches are {tuple(gt.shape[-2:])}, smaller than gt_size {gt_size}: set the '
                         f'dataset\'s crop_pad_size to at least gt_size')
    sharpened = usm_sharpener(gt) if usm_sharpener is not None else None
    lq, clean = degradation(gt if sharpened is None else sharpened, data['kernel1'].to(device),
                            data['kernel2'].to(device), data['sinc_kernel'].to(device))
    gts, lq = paired_random_crop([gt] if sharpened is None else [gt, sharpened], lq, gt_size, degradation.scale)
    if sharpened is None:
        return TrainingPair(lq.contiguous(), gts.contiguous(), clean, None)
    return TrainingPair(lq.contiguous(), gts[0].contiguous(), clean, gts[1].contiguous())
