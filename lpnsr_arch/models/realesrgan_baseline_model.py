"""Device-agnostic Real-ESRNet / Real-ESRGAN baselines (RRDBNet, SwinIR, ...) trained on the LPNSR degradation.

BasicSR's ``RealESRNetModel``/``RealESRGANModel`` hard-code ``.cuda()`` and inline their own copy of the degradation.
These models subclass ``SRModel``/``SRGANModel`` instead and take their training pairs from
:class:`~lpnsr_arch.models.synthetic_pairs.SyntheticPairMixin`, as the diffusion models do, so baselines and LPNSR see
exactly the same synthetic data.

Options (top level, as in Real-ESRGAN recipes): every key of ``DEGRADATION_KEYS``, ``scale``, ``gt_size``,
``gt_usm`` (bool, default true: unsharp-mask the GT before degrading it; Real-ESRNet's target is then the sharpened
GT), ``l1_gt_usm`` / ``percep_gt_usm`` / ``gan_gt_usm`` (the GAN model's targets, as Real-ESRGAN: default true / true /
false, so the discriminator's real images are the plain GT), ``queue_size`` (int, default 0: no training-pair pool;
Real-ESRGAN uses 180).
Validation/test batches are plain pairs (``lq``/``gt``), e.g. from ``PairedImageDataset``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.nn import functional as F

from basicsr.models.realesrgan_model import RealESRGANModel
from basicsr.models.sr_model import SRModel
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from lpnsr_arch.data.degradation import TrainingPair
from lpnsr_arch.models.synthetic_pairs import SyntheticPairMixin
from lpnsr_arch.weights import load_pretrained, resolve_checkpoint


class _BaselineMixin(SyntheticPairMixin):
    """What both baselines add to BasicSR's models: the plugin's checkpoint loader and window padding in ``test``."""

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
class LPNSRRealESRNetModel(_BaselineMixin, SRModel):
    """Real-ESRNet-style baseline: ``net_g`` trained with ``pixel_opt`` (L1) on the shared degradation."""

    def __init__(self, opt: dict) -> None:
        super().__init__(opt)
        if self.is_train:
            self.init_synthetic_pairs()


@MODEL_REGISTRY.register()
class LPNSRRealESRGANModel(_BaselineMixin, SRGANModel):
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
            self.init_synthetic_pairs()

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
