"""Device-agnostic Real-ESRNet / Real-ESRGAN baselines (RRDBNet, SwinIR, ...) trained on the LPNSR degradation.

BasicSR's ``RealESRNetModel``/``RealESRGANModel`` hard-code ``.cuda()`` and inline their own copy of the degradation.
These models subclass ``SRModel``/``SRGANModel`` instead and build training pairs with
:func:`lpnsr_arch.data.degradation.degrade_batch`, so baselines and LPNSR see exactly the same synthetic data.

Options (top level, as in Real-ESRGAN recipes): every key of ``DEGRADATION_KEYS``, ``scale``, ``gt_size``,
``gt_usm`` (bool, default true: unsharp-mask the GT before degrading it; Real-ESRNet's target is then the sharpened
GT), ``l1_gt_usm`` / ``percep_gt_usm`` / ``gan_gt_usm`` (the GAN model's targets, as Real-ESRGAN: default true / true /
false, so the discriminator's real images are the plain GT), ``queue_size`` (int, default 0: no training-pair pool;
Real-ESRGAN uses 180).
Validation/test batches are plain pairs (``lq``/``gt``), e.g. from ``PairedImageDataset``.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch.nn import functional as F

from basicsr.models.realesrgan_model import RealESRGANModel
from basicsr.models.sr_model import SRModel
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils import USMSharp, get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from lpnsr_arch.data.degradation import SecondOrderDegradation, TrainingPair, degrade_batch, training_gt_size
from lpnsr_arch.weights import load_pretrained, resolve_checkpoint

_KERNEL_KEYS = ('kernel1', 'kernel2', 'sinc_kernel')


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
    """``feed_data`` for BasicSR SR models: RealESRGANDataset batches are degraded on ``self.device``; batches that
    already carry ``lq`` (validation, paired training) are used as they are."""

    def _init_synthetic_pairs(self) -> None:
        opt = self.opt
        self.gt_size = training_gt_size(opt)
        self.degradation = SecondOrderDegradation(opt=opt, scale=int(opt['scale'])).to(self.device)
        self.usm_sharpener = USMSharp().to(self.device) if opt.get('gt_usm', True) else None
        queue_size = int(opt.get('queue_size', 0))
        batch = ((opt.get('datasets') or {}).get('train') or {}).get('batch_size_per_gpu')
        self.pair_pool = TrainingPairPool(size=queue_size, batch_size=batch) if queue_size > 0 else None

    @torch.no_grad()
    def feed_data(self, data: Dict[str, torch.Tensor]) -> None:
        """Set ``self.lq`` (B,3,h,w) and, when available, ``self.gt`` (B,3,H,W), both in [0,1] on ``self.device``."""
        if all(key in data for key in _KERNEL_KEYS):
            if not self.is_train:
                raise ValueError('a RealESRGANDataset batch (gt + kernels) was fed to a model built for testing')
            pair = degrade_batch(self.degradation, data, self.device, gt_size=self.gt_size,
                                 usm_sharpener=self.usm_sharpener)
            lq, gt = pair.lq, self._training_target(pair)
            if self.pair_pool is not None:
                lq, gt = self.pair_pool.swap(lq, gt)
            self.lq, self.gt = lq, gt
        elif 'lq' in data:
            self.lq = data['lq'].to(self.device)
            if 'gt' in data:
                self.gt = data['gt'].to(self.device)
        else:
            raise KeyError(f"batch has neither 'lq' nor RealESRGANDataset kernels; keys: {sorted(data)}")

    def _training_target(self, pair: TrainingPair) -> torch.Tensor:
        """``self.gt`` for a synthesised pair: Real-ESRNet trains towards the sharpened GT (``gt_usm``)."""
        return pair.gt if pair.gt_usm is None else pair.gt_usm

    def load_network(self, net: torch.nn.Module, load_path: str, strict: bool = True,
                     param_key: Optional[str] = 'params') -> None:
        """BasicSR's ``load_network`` through the plugin's checkpoint loader: ``.pth`` (``weights_only``) or
        ``.safetensors`` (e.g. ``weights/demo/``); ``param_key`` when the file holds it, else the file's own layout. A
        relative path is looked up in the current folder, then in the repository (as inference does)."""
        option = 'pretrain_network_d' if net is getattr(self, 'net_d', None) else 'pretrain_network_g'
        load_path = str(resolve_checkpoint(option, load_path))
        load_pretrained(self.get_bare_model(net), load_path, param_key=param_key or 'params', strict=strict)
        get_root_logger().info(f'Loaded {type(self.get_bare_model(net)).__name__} from {load_path} [{param_key}]')

    def test(self) -> None:
        """SRModel.test on ``self.lq`` reflect-padded to a multiple of ``network_g.window_size`` (SwinIR; 1 for
        window-free networks), output cropped back to ``scale`` x the LR size."""
        window = int(self.opt['network_g'].get('window_size', 1))
        height, width = self.lq.shape[-2:]
        pad_h, pad_w = (-height) % window, (-width) % window
        if pad_h == 0 and pad_w == 0:
            super().test()
            return
        unpadded_lq = self.lq
        self.lq = F.pad(unpadded_lq, (0, pad_w, 0, pad_h), mode='reflect')
        try:
            super().test()
        finally:
            self.lq = unpadded_lq
        scale = int(self.opt['scale'])
        self.output = self.output[..., :height * scale, :width * scale]


@MODEL_REGISTRY.register()
class LPNSRRealESRNetModel(SyntheticPairMixin, SRModel):
    """Real-ESRNet-style baseline: ``net_g`` trained with ``pixel_opt`` (L1) on the shared degradation."""

    def __init__(self, opt: dict) -> None:
        super().__init__(opt)
        if self.is_train:
            self._init_synthetic_pairs()


@MODEL_REGISTRY.register()
class LPNSRRealESRGANModel(SyntheticPairMixin, SRGANModel):
    """Real-ESRGAN-style baseline: ``net_g`` + ``net_d`` with ``pixel_opt`` and ``gan_opt`` (``perceptual_opt``
    optional: VGG weights are not available offline) on the shared degradation."""

    USM_TARGET_DEFAULTS = {'l1_gt_usm': True, 'percep_gt_usm': True, 'gan_gt_usm': False}  # Real-ESRGAN x4plus

    def __init__(self, opt: dict) -> None:
        for key, default in self.USM_TARGET_DEFAULTS.items():
            value = opt.setdefault(key, default)
            if not isinstance(value, bool):
                raise ValueError(f'option {key} must be true or false, got {value!r}')
        super().__init__(opt)
        if self.is_train:
            self._init_synthetic_pairs()

    def _training_target(self, pair: TrainingPair) -> torch.Tensor:
        """The plain GT: the sharpened one is made per batch in :meth:`optimize_parameters` (after the pair pool)."""
        return pair.gt

    def optimize_parameters(self, current_iter: int) -> None:
        """BasicSR's Real-ESRGAN step: L1 / perceptual / GAN-real targets are ``self.gt`` or its unsharp-masked copy
        as ``l1_gt_usm`` / ``percep_gt_usm`` / ``gan_gt_usm`` say (sharpened per batch, as upstream does after its
        pool; with ``gt_usm: false`` every target is the plain GT)."""
        sharpener = self.usm_sharpener
        with torch.no_grad():
            self.gt_usm = sharpener(self.gt) if sharpener is not None else self.gt
        RealESRGANModel.optimize_parameters(self, current_iter)
