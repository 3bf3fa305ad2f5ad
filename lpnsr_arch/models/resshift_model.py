"""Stage 1: train the ResShift x0-predicting denoiser in the (frozen) autoencoder's latent space.

Per micro-batch (ResShift ``TrainerDifIRLPIPS``): ``y = encode(up(lq))``, ``x0 = encode(gt)`` (no grad),
``t ~ U{0..T-1}``, ``x_in = scale_input(q_sample(x0, y, t, noise), t)``, ``pred = net_g(x_in, t, lq)`` (or
``y - net_g(...)`` with the diffusion's ``predict_type: residual``, whose loss is then ResShift's residual MSE);
``l_mse = MSE(pred, x0)`` in latent space and, optionally, ``l_lpips`` between the quantised (straight-through)
decode of ``pred`` and ``gt``, with the gradient flowing through the frozen decoder.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from basicsr.losses import build_loss
from basicsr.utils.registry import MODEL_REGISTRY

from lpnsr_arch.losses.lpips_loss import LPNSRLPIPSLoss
from lpnsr_arch.models.diffusion_base_model import DiffusionSRModel

__all__ = ['ResShiftModel']


@MODEL_REGISTRY.register()
class ResShiftModel(DiffusionSRModel):
    """``net_g`` = the denoiser (e.g. ``LPNSRResShiftUNet``); frozen ``network_ae`` and optional
    ``network_upsampler``.

    Losses: ``train.latent_opt`` (required; e.g. ``{type: MSELoss, loss_weight: 1.0}``, logged ``l_mse``) and
    ``train.perceptual_opt`` (optional; e.g. ``LPNSRLPIPSLoss``, logged ``l_lpips``). Validation samples with Gaussian
    noise (plain ResShift), seeded by ``val.seed``.
    """

    TRAIN_KEYS = DiffusionSRModel.TRAIN_KEYS | {'latent_opt'}

    @classmethod
    def check_train_options(cls, train_opt: Mapping, opt: Mapping) -> None:
        """The base checks, then ``train.latent_opt`` present."""
        super().check_train_options(train_opt, opt)
        if not train_opt.get('latent_opt'):
            raise KeyError('train.latent_opt (the latent MSE loss, e.g. {type: MSELoss, loss_weight: 1.0}) is '
                           'required by ResShiftModel')

    def init_training_settings(self) -> None:
        self.init_common_training_settings()
        train_opt = self.opt['train']
        self.cri_latent = build_loss(train_opt['latent_opt']).to(self.device)
        perceptual_opt = train_opt.get('perceptual_opt')
        self.cri_perceptual = build_loss(perceptual_opt).to(self.device) if perceptual_opt else None
        self.setup_optimizers()
        self.setup_schedulers()

    # ------------------------------------------------------------------------------------------ training
    def micro_batch_losses(self, lq: Tensor, gt: Tensor) -> 'OrderedDict[str, Tensor]':
        """Weighted loss terms of one micro-batch: ``lq`` (b,3,h,w), ``gt`` (b,3,sh,sw) in [0, 1]."""
        y = self.encode_condition(lq)
        x0 = self.encode_target(gt)
        timesteps = self.diffusion.sample_timesteps(x0.shape[0], self.device)
        noise = torch.randn_like(x0)
        x_in = self.diffusion.training_inputs(x0, y, timesteps, noise)
        pred_x0 = self.diffusion.x0_from_output(self.net_g(x_in, timesteps, lq=lq * 2 - 1), y)
        terms: 'OrderedDict[str, Tensor]' = OrderedDict()
        terms['l_mse'] = self.cri_latent(pred_x0.float(), x0)
        if self.cri_perceptual is not None:
            pred01 = self.decode(pred_x0).clamp(-1, 1) * 0.5 + 0.5
            terms['l_lpips'] = self.perceptual_loss(pred01, gt)
        return terms

    def perceptual_loss(self, pred01: Tensor, gt01: Tensor) -> Tensor:
        """The perceptual term of images in [0, 1]; a NaN LPIPS is replaced by 0 (the official trainer: those samples
        train on the MSE alone). With a per-sample loss (``LPNSRLPIPSLoss``, ``reduction: mean``) only the NaN
        samples are, the others keep theirs; another loss type is replaced as a whole."""
        loss = self.cri_perceptual
        if isinstance(loss, LPNSRLPIPSLoss) and loss.reduction == 'mean':
            per_sample = loss.distance(pred01, gt01)
            nan = torch.isnan(per_sample)
            if bool(nan.any()):
                self.logger.warning(f'NaN l_lpips of {int(nan.sum())} of {nan.numel()} samples replaced by 0')
                per_sample = per_sample.masked_fill(nan, 0.0)
            return loss.loss_weight * per_sample.mean()
        value = loss(pred01, gt01)
        if bool(torch.isnan(value).any()):
            self.logger.warning('NaN l_lpips replaced by 0 for this micro-batch')
            value = torch.nan_to_num(value, nan=0.0)
        return value

    def optimize_parameters(self, current_iter: int) -> None:
        """One optimizer step of ``net_g`` over ``train.grad_accum`` micro-batches, then the EMA update."""
        self.optimizer_g.zero_grad(set_to_none=True)
        scaler = self.grad_scalers['g']
        terms = self.accumulate_gradients((self.lq, self.gt), self.micro_batch_losses, scaler, current_iter)
        if terms is None:
            self.skip_step(self.optimizer_g)
            self.log_dict = OrderedDict(skipped_steps=float(self.num_skipped_steps))
            return
        if self.apply_gradients(self.net_g, self.optimizer_g, scaler, current_iter, 'net_g'):
            if self.ema_decay > 0:
                self.model_ema(decay=self.ema_decay)
        self.log_dict = self.reduce_loss_dict(terms)

    # ------------------------------------------------------------------------------------------ sampling
    def _sampling_parts(self) -> Tuple[nn.Module, Optional[nn.Module], str]:
        return self.inference_network(), None, 'gaussian'

