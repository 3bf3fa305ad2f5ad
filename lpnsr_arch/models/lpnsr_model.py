"""Stage 2: train LPNSR's noise predictor end to end through the full reverse chain (``train_noise_predictor.py``).

Every step unrolls the whole chain (``diffusion.sample`` with :class:`~lpnsr_arch.diffusion.LearnedNoise`) from
``y = encode(up(lq))``; gradients flow through the frozen denoiser and the frozen decoder (quantised,
straight-through) into ``net_g``. Losses on the decoded image ``pred`` in [0, 1] (not clamped): ``l_pix`` (L1),
``l_lpips`` and, from ``train.gan_start_iter``, the hinge generator loss ``l_g_gan`` of a PatchGAN ``net_d`` working
on latents (``train.gan_space: latent``, LPNSR v2) or on images (``pixel``).

Alternation (as the official trainer): when the GAN is active, iterations with ``current_iter % disc_update_freq == 0``
update only ``net_d`` (``l_d = (relu(1 - D(real)).mean() + relu(1 + D(fake)).mean()) / 2``), the others only
``net_g``. Before ``gan_start_iter`` every iteration updates ``net_g`` (the official epoch-1 even steps, which compute
the generator loss and throw it away, are not reproduced).

Learning rates: ``train.scheduler`` is built once per optimizer, so ``net_d`` follows the same schedule as ``net_g``
with ``optim_d.lr`` as its base, indexed by the global iteration from the run's first iteration (not from the GAN
start): at iteration ``k`` D's rate is the schedule after ``k - 1`` steps (``warmup_cosine_lr(optim_d.lr, k - 1,
...)`` for ``WarmupCosineLR``), so its first update (the first discriminator iteration from ``gan_start_iter`` on)
uses the rate the schedule has reached at that iteration, not the schedule's first value. D's scheduler advances while
D is idle without PyTorch's "scheduler before optimizer" warning (see :meth:`DiffusionSRModel.update_learning_rate`).
The spec names a scheduler for the official noise predictor only (its D optimizer: AdamW at 5e-5, no scheduler named);
following G's schedule is this project's choice (README, "Limitations").

``train.gan_samples: clean`` (default ``all``) restricts both GAN terms to the pairs whose LR is the plain bicubic
downscale (``bicubic_prob`` of the synthetic degradation): the degraded pairs then train on ``l_pix``/``l_lpips``
only, so the adversarial texture is learnt where the LR holds the detail and not invented over heavy degradations.
A micro-batch without such a pair contributes zero GAN loss; a paired training set (no synthetic degradation) counts
as all clean. An addition of this project, not of the paper.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.utils.registry import MODEL_REGISTRY

from lpnsr_arch.diffusion import LearnedNoise, NormalDraws
from lpnsr_arch.models.diffusion_base_model import DiffusionSRModel, build_optimizer

__all__ = ['LPNSRModel']

GAN_SPACES = ('latent', 'pixel')
GAN_SAMPLES = ('all', 'clean')


def gan_loss_on_rows(criterion: Callable[..., Tensor], logits: Tensor, keep: Optional[Tensor], *,
                     target_is_real: bool, is_disc: bool) -> Tensor:
    """``criterion`` (BasicSR ``GANLoss``) on the rows of ``logits`` (B, ...) where ``keep`` (B,) bool is True, or on
    all rows when ``keep`` is None. With no row kept the term is a zero that still back-propagates (to nothing)."""
    if keep is not None:
        if not bool(keep.any()):
            return logits.sum() * 0
        logits = logits[keep]
    return criterion(logits, target_is_real, is_disc=is_disc)


@MODEL_REGISTRY.register()
class LPNSRModel(DiffusionSRModel):
    """``net_g`` = the noise predictor (``LPNSRNoisePredictor``, trained); frozen ``network_unet`` (the denoiser),
    ``network_ae`` and optional ``network_upsampler``; optional ``network_d`` (trained, ``train.optim_d``).

    Losses: ``train.pixel_opt`` (L1, ``l_pix``), ``train.perceptual_opt`` (``l_lpips``), ``train.gan_opt`` (BasicSR
    ``GANLoss`` with ``gan_type: hinge``; ``l_g_gan``, and ``l_d`` for ``net_d``). At least one of the first two is
    required. Validation samples with the learned noise (``net_g_ema`` when EMA is on), seeded by ``val.seed``.
    """

    REQUIRED_NETWORKS = DiffusionSRModel.REQUIRED_NETWORKS + ('network_unet', )
    OPTIONAL_NETWORKS = DiffusionSRModel.OPTIONAL_NETWORKS + ('network_d', )
    FROZEN_NETWORKS = DiffusionSRModel.FROZEN_NETWORKS + ('network_unet', )
    ENCODE_IN_FP32 = True  # the official step encodes HR and the upsampled LR in fp32, before its autocast
    TRAIN_KEYS = DiffusionSRModel.TRAIN_KEYS | {
        'pixel_opt', 'gan_opt', 'optim_d', 'gan_space', 'gan_start_iter', 'disc_update_freq', 'gan_samples'
    }

    def build_extra_frozen_networks(self) -> None:
        self.net_unet = self.build_frozen_network('network_unet')

    @classmethod
    def check_train_options(cls, train_opt: Mapping, opt: Mapping) -> None:
        """The base checks, then: a pixel and/or perceptual loss, ``gan_space`` / ``gan_samples`` among their
        choices, ``gan_start_iter >= 0``, ``disc_update_freq >= 2``, and ``network_d`` given together with
        ``train.gan_opt`` and ``train.optim_d``."""
        super().check_train_options(train_opt, opt)
        if not train_opt.get('pixel_opt') and not train_opt.get('perceptual_opt'):
            raise KeyError('LPNSRModel needs train.pixel_opt and/or train.perceptual_opt')
        for key, choices, default in (('gan_space', GAN_SPACES, 'latent'), ('gan_samples', GAN_SAMPLES, 'all')):
            if train_opt.get(key, default) not in choices:
                raise ValueError(f'train.{key} must be one of {choices}, got {train_opt[key]!r}')
        for key, minimum, default, why in (('gan_start_iter', 0, 0, ''),
                                           ('disc_update_freq', 2, 2, ' (D and G alternate)')):
            value = train_opt.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f'train.{key} must be an integer >= {minimum}{why}, got {value!r}')
        if opt.get('network_d'):
            if not train_opt.get('gan_opt') or not train_opt.get('optim_d'):
                raise KeyError('network_d is set: train.gan_opt and train.optim_d are required')
        elif train_opt.get('gan_opt'):
            raise KeyError('train.gan_opt is set but network_d is missing')

    # ------------------------------------------------------------------------------------------ set-up
    def init_training_settings(self) -> None:
        """Losses, the optional discriminator, optimizers and schedulers (the options were checked in
        :meth:`check_options`)."""
        self.init_common_training_settings()
        train_opt = self.opt['train']
        self.cri_pix = build_loss(train_opt['pixel_opt']).to(self.device) if train_opt.get('pixel_opt') else None
        perceptual_opt = train_opt.get('perceptual_opt')
        self.cri_perceptual = build_loss(perceptual_opt).to(self.device) if perceptual_opt else None
        self.gan_space = train_opt.get('gan_space', 'latent')
        self.gan_samples = train_opt.get('gan_samples', 'all')
        self.gan_start_iter = int(train_opt.get('gan_start_iter', 0))
        self.disc_update_freq = int(train_opt.get('disc_update_freq', 2))
        self.net_d = None
        if self.opt.get('network_d'):
            self.net_d = self.model_to_device(build_network(self.opt['network_d']))
            self.print_network(self.net_d)
            self.load_trained_network(self.net_d, 'network_d', default_param_key='params')
            self.net_d.train()
            self.cri_gan = build_loss(train_opt['gan_opt']).to(self.device)
            self.grad_scalers['d'] = self._new_grad_scaler()
        self.last_g_log: 'OrderedDict[str, float]' = OrderedDict()
        self.last_d_log: 'OrderedDict[str, float]' = OrderedDict()
        self.setup_optimizers()
        self.setup_schedulers()

    def setup_optimizers(self) -> None:
        super().setup_optimizers()
        if self.net_d is not None:
            self.optimizer_d = build_optimizer('optim_d', self.opt['train']['optim_d'], list(self.net_d.parameters()))
            self.optimizers.append(self.optimizer_d)

    # ------------------------------------------------------------------------------------------ training
    def gan_active(self, current_iter: int) -> bool:
        return self.net_d is not None and current_iter >= self.gan_start_iter

    def run_chain(self, lq: Tensor) -> Tensor:
        """The unrolled 4-step chain from ``lq`` (b,3,h,w) in [0, 1] with the learned noise: the final latent x0.

        Gradients reach ``net_g`` through every later denoiser call when grad is enabled.
        """
        y = self.encode_condition(lq)
        noise_source = LearnedNoise(self.net_g, NormalDraws())
        return self.diffusion.sample(y, lq * 2 - 1, self.net_unet, noise_source, torch.randn_like(y))

    def _discriminator_input(self, latent: Tensor, image01: Tensor) -> Tensor:
        return latent if self.gan_space == 'latent' else image01 * 2 - 1

    def _gan_rows(self, clean: Tensor) -> Optional[Tensor]:
        """The rows the GAN terms see: ``clean`` (b,) bool under ``gan_samples: clean``, else None (all)."""
        return clean if self.gan_samples == 'clean' else None

    def _batch_with_mask(self) -> Tuple[Tensor, Tensor, Tensor]:
        """``(lq, gt, clean)`` for :meth:`accumulate_gradients`; ``clean`` is all True for a paired batch."""
        clean = self.clean if self.clean is not None else torch.ones(
            self.lq.size(0), dtype=torch.bool, device=self.lq.device)
        return self.lq, self.gt, clean

    def generator_losses(self, lq: Tensor, gt: Tensor, clean: Tensor, use_gan: bool) -> 'OrderedDict[str, Tensor]':
        """Weighted loss terms of one micro-batch for ``net_g``: ``lq`` (b,3,h,w), ``gt`` (b,3,sh,sw) in [0, 1],
        ``clean`` (b,) bool (see ``train.gan_samples``)."""
        final = self.run_chain(lq)
        pred01 = self.decode(final) * 0.5 + 0.5
        terms: 'OrderedDict[str, Tensor]' = OrderedDict()
        if self.cri_pix is not None:
            terms['l_pix'] = self.cri_pix(pred01, gt)
        if self.cri_perceptual is not None:
            terms['l_lpips'] = self.cri_perceptual(pred01, gt)
        if use_gan:
            fake_logits = self.net_d(self._discriminator_input(final, pred01))
            terms['l_g_gan'] = gan_loss_on_rows(self.cri_gan, fake_logits, self._gan_rows(clean), target_is_real=True,
                                                is_disc=False)
        return terms

    def discriminator_losses(self, lq: Tensor, gt: Tensor, clean: Tensor) -> 'OrderedDict[str, Tensor]':
        """The hinge loss of ``net_d`` on one micro-batch (real: ``encode(gt)`` or ``gt``; fake: the chain's output)."""
        with torch.no_grad():
            final = self.run_chain(lq)
            if self.gan_space == 'latent':
                real, fake = self.encode_target(gt), final
            else:
                real, fake = gt * 2 - 1, self.decode(final)
        rows = self._gan_rows(clean)
        l_d_real = gan_loss_on_rows(self.cri_gan, self.net_d(real), rows, target_is_real=True, is_disc=True)
        l_d_fake = gan_loss_on_rows(self.cri_gan, self.net_d(fake), rows, target_is_real=False, is_disc=True)
        return OrderedDict(l_d=(l_d_real + l_d_fake) / 2)

    def optimize_parameters(self, current_iter: int) -> None:
        """A discriminator iteration or a generator iteration (see the module docstring)."""
        use_gan = self.gan_active(current_iter)
        if use_gan and current_iter % self.disc_update_freq == 0:
            self._update_discriminator(current_iter)
        else:
            self._update_generator(current_iter, use_gan)
        # G and D alternate: report the latest values of both, so every print shows the generator losses too
        self.log_dict = OrderedDict(self.last_g_log)
        for name, value in self.last_d_log.items():  # both sides may report skipped_steps: name D's apart
            self.log_dict[f'{name}_d' if name in self.log_dict else name] = value

    def _update_generator(self, current_iter: int, use_gan: bool) -> None:
        if self.net_d is not None:
            self.net_d.requires_grad_(False)
        self.optimizer_g.zero_grad(set_to_none=True)
        scaler = self.grad_scalers['g']

        def losses(lq: Tensor, gt: Tensor, clean: Tensor) -> 'OrderedDict[str, Tensor]':
            return self.generator_losses(lq, gt, clean, use_gan)

        terms = self.accumulate_gradients(self._batch_with_mask(), losses, scaler, current_iter)
        if terms is None:
            self.skip_step(self.optimizer_g)
            self.last_g_log = OrderedDict(skipped_steps=float(self.num_skipped_steps))
            return
        if self.apply_gradients(self.net_g, self.optimizer_g, scaler, current_iter, 'net_g') and self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        self.last_g_log = self.reduce_loss_dict(terms)

    def _update_discriminator(self, current_iter: int) -> None:
        self.net_d.requires_grad_(True)
        self.optimizer_d.zero_grad(set_to_none=True)
        scaler = self.grad_scalers['d']
        terms = self.accumulate_gradients(self._batch_with_mask(), self.discriminator_losses, scaler, current_iter)
        if terms is None:
            self.skip_step(self.optimizer_d)
            self.last_d_log = OrderedDict(skipped_steps=float(self.num_skipped_steps))
            return
        self.apply_gradients(self.net_d, self.optimizer_d, scaler, current_iter, 'net_d')
        self.last_d_log = self.reduce_loss_dict(terms)

    # ------------------------------------------------------------------------------------------ sampling / saving
    def _sampling_parts(self) -> Tuple[nn.Module, Optional[nn.Module], str]:
        return self.net_unet, self.inference_network(), 'learned'

    def save_extra_networks(self, current_iter: int) -> None:
        if getattr(self, 'net_d', None) is not None:
            self.save_network(self.net_d, 'net_d', current_iter)
