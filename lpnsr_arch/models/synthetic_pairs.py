"""Training pairs made on the model's device: the one ``feed_data`` of every training model in this package.

``LPNSRRealESRGANDataset`` batches carry the GT crop and its blur kernels; :class:`SyntheticPairMixin` degrades them
with :func:`lpnsr_arch.data.degradation.degrade_batch` (the Real-ESRGAN second-order pipeline), so the baselines, the
ResShift denoiser and the LPNSR noise predictor all train on the same synthetic data. Paired batches (``lq``/``gt``:
validation, paired training sets) pass through unchanged.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from basicsr.utils import USMSharp

from lpnsr_arch.data.degradation import (KERNEL_KEYS, SecondOrderDegradation, TrainingPair, degrade_batch,
                                         training_gt_size)

__all__ = ['SyntheticPairMixin', 'TrainingPairPool']

class TrainingPairPool:
    """Real-ESRGAN's training-pair pool: mixes pairs across batches so one batch holds several degradations.

    Args:
        size: number of pairs kept (a multiple of the batch size).
        batch_size: the training batch size when known at construction (checked now rather than at the first swap).
    """

    def __init__(self, *, size: int, batch_size: Optional[int] = None) -> None:
        if size <= 0:
            raise ValueError(f'queue_size must be positive, got {size}')
        self.size = size
        if batch_size:
            self._check_batch(int(batch_size))
        self.lq_pool: Optional[torch.Tensor] = None
        self.gt_pool: Optional[torch.Tensor] = None
        self.filled = 0

    def _check_batch(self, batch: int) -> None:
        if self.size % batch != 0:
            raise ValueError(f'queue_size {self.size} must be divisible by datasets.train.batch_size_per_gpu {batch}')

    @torch.no_grad()
    def swap(self, lq: torch.Tensor, gt: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Store ``(lq, gt)`` ((B,3,h,w), (B,3,H,W)) and return a batch: the same one until the pool is full,
        then ``B`` random stored pairs."""
        batch = lq.size(0)
        if self.lq_pool is None:
            self._check_batch(batch)
            self.lq_pool = lq.new_zeros((self.size, *lq.shape[1:]))
            self.gt_pool = gt.new_zeros((self.size, *gt.shape[1:]))
        if self.filled < self.size:
            self.lq_pool[self.filled:self.filled + batch] = lq
            self.gt_pool[self.filled:self.filled + batch] = gt
            self.filled += batch
            return lq, gt
        order = torch.randperm(self.size, device=self.lq_pool.device)
        self.lq_pool, self.gt_pool = self.lq_pool[order], self.gt_pool[order]
        lq_out, gt_out = self.lq_pool[:batch].clone(), self.gt_pool[:batch].clone()
        self.lq_pool[:batch], self.gt_pool[:batch] = lq, gt
        return lq_out, gt_out


class SyntheticPairMixin:
    """``feed_data`` for BasicSR models (mixed in before ``SRModel``/``SRGANModel``; call
    :meth:`init_synthetic_pairs` in ``__init__`` when training).

    Options (top level, as in Real-ESRGAN recipes): the degradation keys, ``scale``, ``gt_size``, ``gt_usm`` (bool,
    default :attr:`GT_USM_DEFAULT`: unsharp-mask the GT; as Real-ESRGAN, the LR, clean bicubic pairs included, is then
    made from the sharpened GT, and :meth:`_training_target` picks the target) and ``queue_size`` (Real-ESRGAN's
    training-pair pool, default 0: none).
    """

    #: the default of ``gt_usm``: Real-ESRNet trains towards the sharpened GT, ResShift and LPNSR towards the plain one
    GT_USM_DEFAULT: bool = True

    def init_synthetic_pairs(self) -> None:
        """Build the optional GT sharpener and pair pool on ``self.device``; the degradation is built at the first
        synthetic batch (a model trained on paired batches needs none of its options)."""
        opt = self.opt
        gt_usm = opt.get('gt_usm', self.GT_USM_DEFAULT)
        if not isinstance(gt_usm, bool):
            raise ValueError(f'option gt_usm must be true or false, got {gt_usm!r}')
        self.degradation: Optional[SecondOrderDegradation] = None
        self.usm_sharpener = USMSharp().to(self.device) if gt_usm else None
        queue_size = int(opt.get('queue_size') or 0)
        batch = ((opt.get('datasets') or {}).get('train') or {}).get('batch_size_per_gpu')
        self.pair_pool = TrainingPairPool(size=queue_size, batch_size=batch) if queue_size > 0 else None

    @torch.no_grad()
    def feed_data(self, data: Dict[str, torch.Tensor]) -> None:
        """Set ``self.lq`` (B,3,h,w), ``self.gt`` (B,3,sh,sw) when the batch has one, both in [0, 1] on
        ``self.device``, and ``self.clean``: (B,) bool, True where a synthesised LR is the plain bicubic downscale
        (``bicubic_prob``); None for a paired batch or a pooled one (not known)."""
        if any(key in data for key in KERNEL_KEYS):  # degrade_batch names a missing kernel
            if not self.is_train or not hasattr(self, 'degradation'):
                raise ValueError('a RealESRGANDataset batch (gt + kernels) was fed to a model built for testing (or '
                                 'to one whose __init__ did not call init_synthetic_pairs)')
            if self.degradation is None:
                self.gt_size = training_gt_size(self.opt)
                scale = getattr(self, 'scale', None) or int(self.opt['scale'])
                self.degradation = SecondOrderDegradation(opt=self.opt, scale=scale).to(self.device)
            pair = degrade_batch(self.degradation, data, self.device, gt_size=self.gt_size,
                                 usm_sharpener=self.usm_sharpener)
            lq, gt, clean = pair.lq, self._training_target(pair), pair.clean
            if self.pair_pool is not None:
                (lq, gt), clean = self.pair_pool.swap(lq, gt), None
            self.lq, self.gt, self.clean = lq, gt, clean
        elif 'lq' in data:
            self.lq = data['lq'].to(self.device)
            if 'gt' in data:
                self.gt = data['gt'].to(self.device)
            self.clean = None
        else:
            raise KeyError(f"batch has neither 'lq' nor RealESRGANDataset kernels; keys: {sorted(data)}")

    def _training_target(self, pair: TrainingPair) -> torch.Tensor:
        """``self.gt`` for a synthesised pair: the sharpened GT when ``gt_usm`` is on, else the plain one."""
        return pair.gt if pair.gt_usm is None else pair.gt_usm
