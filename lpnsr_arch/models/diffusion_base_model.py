"""What the two diffusion training stages share (ResShift denoiser training and LPNSR noise-predictor training).

:class:`DiffusionSRModel` is an abstract BasicSR model (not registered): it builds the frozen networks (autoencoder,
optional pre-upsampler, ...) from ``network_*`` options, the :class:`~lpnsr_arch.diffusion.ResShiftDiffusion` from the
top-level ``diffusion:`` block, and adds what BasicSR 1.4.2 lacks: AMP (``train.amp: none|fp16|bf16``) with the
GradScaler state kept in the ``.state`` resume file, AdamW, the :class:`WarmupCosineLR` schedule, gradient accumulation
(``train.grad_accum`` micro-batches per iteration), gradient clipping (``train.grad_clip``), a guard that skips a step
whose loss or gradient is not finite and never saves non-finite weights, and atomic checkpoint writes.

Value ranges: images enter as [0, 1] (BasicSR datasets), are mapped to [-1, 1] for the autoencoder and the networks'
``lq`` condition, and the super-resolved result leaves as [0, 1].
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections import OrderedDict
from typing import Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from basicsr.archs import build_network
from basicsr.models.base_model import BaseModel
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only

from lpnsr_arch.archs.upsampler_arch import LPNSRBicubicUpsampler, bicubic_upscale
from lpnsr_arch.diffusion import DiffusionConfig, ResShiftDiffusion
from lpnsr_arch.models.synthetic_pairs import SyntheticPairMixin
from lpnsr_arch.pipeline import InferenceDefaults, LPNSRPipeline
from lpnsr_arch.weights import load_network_from_options, save_state_dict

__all__ = ['DiffusionSRModel', 'WarmupCosineLR', 'warmup_cosine_lr']

AMP_DTYPES: Dict[str, Optional[torch.dtype]] = {'none': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}
OPTIMIZERS = {'Adam': torch.optim.Adam, 'AdamW': torch.optim.AdamW}
#: What PyTorch's ``LRScheduler.step()`` warns at a scheduler's first step when its optimizer has not stepped yet.
SCHEDULER_BEFORE_OPTIMIZER_WARNING = r'Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`'


# --------------------------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------------------------
def warmup_cosine_lr(base_lr: float, step: int, *, warmup_iter: int, total_iter: int, eta_min: float) -> float:
    """The learning rate after ``step`` scheduler steps (``step`` = 0 for the first iteration).

    Linear warm-up ``base_lr * (step + 1) / warmup_iter`` for the first ``warmup_iter`` steps (ResShift's
    ``adjust_lr``), then a cosine from ``base_lr`` down to ``eta_min`` over the remaining ``total_iter - warmup_iter``
    steps; after ``total_iter`` it stays at ``eta_min``.
    """
    if step < warmup_iter:
        return base_lr * (step + 1) / warmup_iter
    progress = min(1.0, (step - warmup_iter) / max(1, total_iter - warmup_iter))
    return eta_min + (base_lr - eta_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """Linear warm-up, then cosine annealing to ``eta_min`` (see :func:`warmup_cosine_lr`); stepped once per iteration.

    Use it from the options as ``train.scheduler: {type: WarmupCosineLR, warmup_iter: 5000, total_iter: 400000,
    eta_min: 2.0e-5}`` (and leave BasicSR's own ``train.warmup_iter`` unset, or warm-up would be applied twice).
    """

    def __init__(self,
                 optimizer: torch.optim.Optimizer,
                 *,
                 warmup_iter: int,
                 total_iter: int,
                 eta_min: float = 0.0,
                 last_epoch: int = -1):
        if warmup_iter < 0 or total_iter <= 0 or warmup_iter > total_iter:
            raise ValueError(f'WarmupCosineLR needs 0 <= warmup_iter <= total_iter and total_iter > 0, got '
                             f'warmup_iter={warmup_iter}, total_iter={total_iter}')
        self.warmup_iter = int(warmup_iter)
        self.total_iter = int(total_iter)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        return [
            warmup_cosine_lr(
                base_lr, self.last_epoch, warmup_iter=self.warmup_iter, total_iter=self.total_iter,
                eta_min=self.eta_min) for base_lr in self.base_lrs
        ]


def split_micro_batches(tensors: Sequence[Tensor], num_chunks: int) -> List[Tuple[Tensor, ...]]:
    """Split tensors of equal batch size into ``num_chunks`` micro-batches (the first ones one sample larger when the
    batch does not divide evenly)."""
    batch = tensors[0].shape[0]
    if batch < num_chunks:
        raise ValueError(f'train.grad_accum={num_chunks} is larger than the batch size {batch}')
    return list(zip(*(torch.tensor_split(t, num_chunks) for t in tensors)))


def all_finite(net: nn.Module) -> bool:
    """True when every floating-point parameter and buffer of ``net`` is finite."""
    tensors = list(net.parameters()) + list(net.buffers())
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


@contextlib.contextmanager
def eval_mode(net: nn.Module) -> Iterator[nn.Module]:
    """Put ``net`` in eval mode for the ``with`` block and restore its previous mode afterwards."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


def build_optimizer(block_name: str, options: Mapping, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    """An optimizer from an options block ``{type: AdamW, lr: ..., ...}``; bad keys raise naming ``train.<block>``."""
    options = dict(options)
    optim_type = options.pop('type', None)
    if optim_type not in OPTIMIZERS:
        raise KeyError(f'train.{block_name}.type must be one of {sorted(OPTIMIZERS)}, got {optim_type!r}')
    try:
        return OPTIMIZERS[optim_type](params, **options)
    except TypeError as error:
        raise KeyError(f'train.{block_name}: bad option for {optim_type}: {error}') from error


# --------------------------------------------------------------------------------------------------------------
# The shared model
# --------------------------------------------------------------------------------------------------------------
def all_processes_agree(flag: bool, device: torch.device) -> bool:
    """``flag`` and-ed over the processes of a distributed run (one all-reduce); ``flag`` itself otherwise.

    Lets every process take the same branch (e.g. skip a step) so that none is left waiting in a collective.
    """
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    agreed = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
    return bool(agreed.item())


class CheckedOptions(NamedTuple):
    """The values :meth:`DiffusionSRModel.check_options` read and checked."""
    diffusion: DiffusionConfig
    amp_name: str  # a key of AMP_DTYPES
    val_seed: int  # val.seed (default 12345)
    val_self_ensemble: bool  # val.upsampler_self_ensemble (default false)


class DiffusionSRModel(SyntheticPairMixin, SRModel):
    """Abstract base of the diffusion training models (``net_g`` is the trained network, everything else frozen).

    Subclasses set the option-key whitelists below, build their losses in :meth:`init_training_settings` and implement
    :meth:`optimize_parameters` and :meth:`_sampling_parts`. ``nondist_validation`` is BasicSR's: it calls
    :meth:`test`, which runs the inference pipeline (:meth:`sampling_pipeline`) and writes ``self.output``
    (B, 3, sH, sW) in [0, 1]. Training batches come from :class:`SyntheticPairMixin` (``self.lq``, ``self.gt``,
    ``self.clean``), towards the plain GT unless ``gt_usm: true``.
    """

    GT_USM_DEFAULT = False

    #: ``network_*`` options that must be present / may be present (``network_g`` is always required).
    REQUIRED_NETWORKS: Tuple[str, ...] = ('network_g', 'network_ae')
    OPTIONAL_NETWORKS: Tuple[str, ...] = ('network_upsampler', )
    #: networks that are loaded once and never trained (they must be listed in ``path.ignore_resume_networks``).
    FROZEN_NETWORKS: Tuple[str, ...] = ('network_ae', 'network_upsampler')
    #: keys allowed in the ``train:`` block.
    TRAIN_KEYS: frozenset = frozenset({
        'ema_decay', 'optim_g', 'scheduler', 'total_iter', 'warmup_iter', 'amp', 'grad_accum', 'grad_clip',
        'perceptual_opt'
    })

    def __init__(self, opt: Dict):
        BaseModel.__init__(self, opt)
        self.logger = get_root_logger()
        checked = self.check_options(opt)
        self.scale = int(opt.get('scale', 4))
        self.diffusion = ResShiftDiffusion(checked.diffusion)
        self.amp_dtype = AMP_DTYPES[checked.amp_name]
        # the pipeline's name for it
        self.sampling_precision = 'fp32' if checked.amp_name == 'none' else checked.amp_name
        self.val_seed, self.val_self_ensemble = checked.val_seed, checked.val_self_ensemble

        self.net_ae = self.build_frozen_network('network_ae')
        self.net_upsampler = self.build_frozen_network('network_upsampler') if opt.get('network_upsampler') else None
        self.build_extra_frozen_networks()

        self.net_g = self.model_to_device(build_network(opt['network_g']))
        self.print_network(self.net_g)
        self.load_trained_network(self.net_g, 'network_g', default_param_key='params')
        if self.is_train:
            self.init_synthetic_pairs()
            self.init_training_settings()

    # ------------------------------------------------------------------------------------------ options
    @classmethod
    def check_options(cls, opt: Mapping) -> CheckedOptions:
        """Every check of the options that needs no network, data or device (``lpnsr_arch/train.py`` runs it before
        BasicSR creates the experiment folder): the ``network_*`` and ``train.*`` keys (:meth:`_check_option_keys`),
        the ``train`` values when training (:meth:`check_train_options`), the ``diffusion`` block, ``train.amp``,
        ``val.seed`` and ``val.upsampler_self_ensemble``. Returns what it read (:class:`CheckedOptions`)."""
        cls._check_option_keys(opt)
        val_opt = opt.get('val') or {}
        self_ensemble = val_opt.get('upsampler_self_ensemble', False)
        if not isinstance(self_ensemble, bool):
            raise ValueError(f'val.upsampler_self_ensemble must be true or false, got {self_ensemble!r}')
        val_seed = val_opt.get('seed', 12345)
        if isinstance(val_seed, bool) or not isinstance(val_seed, int) or val_seed < 0:
            raise ValueError(f'val.seed must be a non-negative integer, got {val_seed!r}')
        config = DiffusionConfig.from_dict(opt.get('diffusion'))
        amp_name = str((opt.get('train') or {}).get('amp', 'none')).lower()
        if amp_name not in AMP_DTYPES:
            raise ValueError(f'train.amp must be one of {sorted(AMP_DTYPES)}, got {amp_name!r}')
        if AMP_DTYPES[amp_name] == torch.bfloat16 and not opt.get('dist') and int(opt.get('num_gpu') or 0) > 1:
            # BasicSR would wrap the trained networks in DataParallel, whose replica threads enter autocast without
            # the caller's dtype: they would run in fp16, unscaled
            raise ValueError('train.amp: bf16 with num_gpu > 1 needs a distributed launch (torchrun ... --launcher '
                             'pytorch; see the README): DataParallel replicas would run in fp16 without loss scaling')
        return CheckedOptions(config, amp_name, val_seed, self_ensemble)

    @classmethod
    def _check_option_keys(cls, opt: Mapping) -> None:
        """Raise a ``KeyError`` naming any missing/unknown ``network_*`` key or unknown ``train.*`` key."""
        known_networks = set(cls.REQUIRED_NETWORKS) | set(cls.OPTIONAL_NETWORKS)
        for key in opt:
            if key.startswith('network_') and key not in known_networks:
                raise KeyError(f'unknown option {key!r} for {cls.__name__}; expected one of '
                               f'{sorted(known_networks)}')
        for key in cls.REQUIRED_NETWORKS:
            if not opt.get(key):
                raise KeyError(f'option {key!r} is required by {cls.__name__}')
        if opt.get('is_train'):
            unknown = sorted(set(opt.get('train') or {}) - cls.TRAIN_KEYS)
            if unknown:
                raise KeyError(f'unknown option(s) {["train." + k for k in unknown]} for {cls.__name__}; '
                               f'expected a subset of {sorted(cls.TRAIN_KEYS)}')
            cls.check_train_options(opt.get('train') or {}, opt)
            # no pool: a pooled batch's clean mask is unknown, and LPNSRModel's gan_samples needs it
            if int(opt.get('queue_size') or 0):
                raise KeyError(f'queue_size: {cls.__name__} keeps no training-pair pool (only the baseline '
                               'models do); remove the key or set it to 0')
            ignored = set((opt.get('path') or {}).get('ignore_resume_networks') or [])
            missing = [k for k in cls.FROZEN_NETWORKS if opt.get(k) and k not in ignored]
            if missing:
                raise KeyError(f'path.ignore_resume_networks must list the frozen network(s) {missing}: otherwise a '
                               'resumed run looks for models/net_<name>_<iter>.pth files that are never written')

    @classmethod
    def check_train_options(cls, train_opt: Mapping, opt: Mapping) -> None:
        """Refuse a ``train`` block that would fail (or silently misbehave) later: the optimizer and scheduler
        blocks present, ``0 <= ema_decay < 1``, loss reductions that give a scalar. Subclasses add their own keys
        (``opt``: the whole options, for checks that involve other blocks)."""
        for key in ('optim_g', 'scheduler'):
            if not isinstance(train_opt.get(key), Mapping) or 'type' not in train_opt[key]:
                raise KeyError(f'option train.{key} (a block with a type) is required for training')
        ema_decay = train_opt.get('ema_decay', 0)
        if isinstance(ema_decay, bool) or not isinstance(ema_decay, (int, float)) or not 0 <= ema_decay < 1:
            raise ValueError(f'train.ema_decay must be in [0, 1) (0: no EMA), got {ema_decay!r}')
        for key, block in train_opt.items():
            if key.endswith('_opt') and isinstance(block, Mapping) and block.get('reduction', 'mean') not in (
                    'mean', 'sum'):
                raise ValueError(f"train.{key}.reduction must be 'mean' or 'sum' (the loss must be a scalar), got "
                                 f"{block['reduction']!r}")

    # ------------------------------------------------------------------------------------------ networks
    def build_extra_frozen_networks(self) -> None:
        """Hook: subclasses build their further frozen networks here (before ``net_g``)."""

    def build_frozen_network(self, key: str) -> nn.Module:
        """Build ``opt[key]``, load ``path.pretrain_<key>`` (``param_key_<name>``, ``strict_load_<name>``), freeze it.

        The returned network is on ``self.device``, in eval mode, with ``requires_grad=False`` (gradients can still
        flow *through* it to its inputs).
        """
        net = build_network(self.opt[key])
        net.to(self.device)
        if load_network_from_options(net, self.opt.get('path'), key[len('network_'):], log=self.logger) is None and any(
                True for _ in net.parameters()):
            self.logger.warning(f'{key} ({type(net).__name__}) has parameters but no path.pretrain_{key}: '
                                'it stays frozen at its random initialisation')
        net.requires_grad_(False)
        net.eval()
        return net

    def load_trained_network(self, net: nn.Module, key: str, *, default_param_key: str) -> None:
        """Load ``path.pretrain_<key>`` into a trained network (``param_key_<name>``, default ``default_param_key``
        when the checkpoint has it, else the checkpoint's own layout: official flat files load as they are)."""
        load_network_from_options(self.get_bare_model(net), self.opt.get('path'), key[len('network_'):],
                                  default_param_key=default_param_key, log=self.logger)

    def init_ema(self) -> None:
        """Build ``net_g_ema`` (``train.ema_decay`` > 0): a copy of ``net_g``, then ``params_ema`` of
        ``path.pretrain_network_g`` over it (so that with ``strict_load_g: false`` the entries the file lacks are
        ``net_g``'s, not a second random initialisation)."""
        self.ema_decay = float(self.opt['train'].get('ema_decay', 0))
        if self.ema_decay <= 0:
            return
        self.logger.info(f'Use Exponential Moving Average with decay: {self.ema_decay}')
        self.net_g_ema = build_network(self.opt['network_g']).to(self.device)
        self.model_ema(0)
        load_network_from_options(self.net_g_ema, self.opt.get('path'), 'g', param_key='params_ema', log=self.logger)
        self.net_g_ema.requires_grad_(False)
        self.net_g_ema.eval()

    def model_ema(self, decay: float = 0.999) -> None:
        """EMA of ``net_g``'s parameters into ``net_g_ema``; buffers (e.g. ``relative_position_index``) are copied."""
        net_g = self.get_bare_model(self.net_g)
        ema_params = dict(self.net_g_ema.named_parameters())
        with torch.no_grad():
            for name, param in net_g.named_parameters():
                ema_params[name].mul_(decay).add_(param.detach(), alpha=1 - decay)
            ema_buffers = dict(self.net_g_ema.named_buffers())
            for name, buffer in net_g.named_buffers():
                ema_buffers[name].copy_(buffer)

    # ------------------------------------------------------------------------------------------ training set-up
    def init_common_training_settings(self) -> None:
        """EMA, grad accumulation/clipping, GradScaler for ``net_g``; subclasses add losses and optimizers."""
        train_opt = self.opt['train']
        self.net_g.train()
        self.init_ema()
        self.grad_accum = int(train_opt.get('grad_accum', 1))
        if self.grad_accum < 1:
            raise ValueError(f'train.grad_accum must be >= 1, got {self.grad_accum}')
        grad_clip = train_opt.get('grad_clip')
        self.grad_clip = float(grad_clip) if grad_clip else None
        self.grad_scalers: Dict[str, torch.amp.GradScaler] = {'g': self._new_grad_scaler()}
        self.num_skipped_steps = 0

    def _new_grad_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def setup_optimizers(self) -> None:
        params = [p for p in self.net_g.parameters() if p.requires_grad]
        self.optimizer_g = build_optimizer('optim_g', self.opt['train']['optim_g'], params)
        self.optimizers.append(self.optimizer_g)

    def setup_schedulers(self) -> None:
        """BasicSR's schedulers plus ``WarmupCosineLR``; one scheduler per optimizer."""
        train_opt = self.opt['train']
        scheduler_opt = dict(train_opt['scheduler'])
        scheduler_type = scheduler_opt.pop('type', None)
        if scheduler_type != 'WarmupCosineLR':
            self.opt['train'] = dict(train_opt, scheduler=dict(train_opt['scheduler']))
            super().setup_schedulers()
            return
        if train_opt.get('warmup_iter', -1) > 0:
            raise ValueError('train.warmup_iter applies BasicSR\'s own warm-up on top of WarmupCosineLR\'s: set '
                             'train.scheduler.warmup_iter instead and remove train.warmup_iter')
        for optimizer in self.optimizers:
            try:
                self.schedulers.append(WarmupCosineLR(optimizer, **scheduler_opt))
            except TypeError as error:
                raise KeyError(f'train.scheduler: bad option for WarmupCosineLR: {error}') from error

    def update_learning_rate(self, current_iter: int, warmup_iter: int = -1) -> None:
        """BasicSR's schedule stepping, without PyTorch's warning for the scheduler of an optimizer that has not
        stepped yet.

        As in BasicSR, each iteration from the second one on steps every scheduler once, before the iteration's
        update, then applies BasicSR's linear warm-up (``train.warmup_iter``) if any: the schedules are indexed by
        the global iteration, so at iteration ``k`` every optimizer's rate is its schedule after ``k - 1`` steps
        (``warmup_cosine_lr(lr, k - 1, ...)`` for ``WarmupCosineLR``), whether or not that optimizer has trained
        before. An optimizer may start late: ``LPNSRModel``'s discriminator first steps at the first discriminator
        iteration from ``train.gan_start_iter`` on (at the earliest iteration 2, since G and D alternate). Its
        scheduler's first step then comes before its optimizer's first step, and PyTorch warns ("Detected call of
        `lr_scheduler.step()` before `optimizer.step()`") that the schedule's first value is skipped, which is what
        a schedule indexed by the global iteration means. That warning is filtered while stepping the scheduler of
        an optimizer with no per-parameter state yet (no step taken: Adam/AdamW create their state at the first
        step; a resumed optimizer has it), and only there; the rates are the same as BasicSR's.
        """
        if current_iter > 1:
            for scheduler in self.schedulers:
                if scheduler.optimizer.state:
                    scheduler.step()
                    continue
                with warnings.catch_warnings():
                    warnings.filterwarnings('ignore', message=SCHEDULER_BEFORE_OPTIMIZER_WARNING, category=UserWarning)
                    scheduler.step()
        if current_iter < warmup_iter:  # BasicSR's linear warm-up, unchanged
            self._set_lr([[lr / warmup_iter * current_iter for lr in init_lrs] for init_lrs in self._get_init_lr()])

    # ------------------------------------------------------------------------------------------ AMP and steps
    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to ``train.amp``'s dtype on this device (a no-op context for ``amp: none``)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def accumulate_gradients(self, batch: Sequence[Tensor], loss_fn: Callable[..., 'OrderedDict[str, Tensor]'],
                             scaler: torch.amp.GradScaler, current_iter: int) -> Optional['OrderedDict[str, Tensor]']:
        """Run ``loss_fn(*micro_batch)`` on ``train.grad_accum`` micro-batches and back-propagate their sum.

        Each micro-batch's terms are weighted by its share of the batch, so the gradients equal those of the full
        batch. Returns the batch-mean loss terms (detached), or ``None`` when a term was not finite: then the
        gradients are discarded and the caller must skip the step.
        """
        batch_size = batch[0].shape[0]
        totals: 'OrderedDict[str, Tensor]' = OrderedDict()
        for micro_batch in split_micro_batches(batch, self.grad_accum):
            share = micro_batch[0].shape[0] / batch_size
            with self.autocast():
                terms = loss_fn(*micro_batch)
            finite = torch.stack([torch.isfinite(value.detach()).all() for value in terms.values()]).tolist()
            bad = [name for name, ok in zip(terms, finite) if not ok]  # one device sync for all the terms
            if bad:
                self.logger.warning(f'iter {current_iter}: non-finite loss {bad} '
                                    f'({ {k: float(v.detach()) for k, v in terms.items()} }); the step is skipped')
            if not all_processes_agree(not bad, self.device):  # every process skips together, before any backward
                if not bad:
                    self.logger.warning(f'iter {current_iter}: another process had a non-finite loss; the step is '
                                        'skipped on all of them')
                return None
            scaler.scale(sum(terms.values()) * share).backward()
            for name, value in terms.items():
                totals[name] = totals.get(name, 0) + value.detach().float() * share
        return totals

    def apply_gradients(self, net: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                        current_iter: int, label: str) -> bool:
        """Unscale, clip (``train.grad_clip``), step and update the scaler. A non-finite gradient skips the step
        (with fp16 the scaler lowers its scale, as usual). Returns whether the weights changed."""
        params = [p for p in net.parameters() if p.requires_grad]
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip or float('inf'))
        finite = bool(torch.isfinite(grad_norm))
        if finite or scaler.is_enabled():
            scaler.step(optimizer)  # an enabled scaler skips the update itself when a gradient is inf/nan
            scaler.update()
        if not finite:
            self.logger.warning(f'iter {current_iter}: non-finite gradient norm of {label}; the step is skipped')
        optimizer.zero_grad(set_to_none=True)
        return finite

    def skip_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Discard the accumulated gradients of a step whose loss was not finite."""
        optimizer.zero_grad(set_to_none=True)
        self.num_skipped_steps += 1

    # ------------------------------------------------------------------------------------------ data and encoding
    def upsample(self, lq01: Tensor) -> Tensor:
        """Pre-upsample LR (B,3,h,w) in [0, 1] to (B,3,sh,sw), float32, not clamped (bicubic when no
        ``network_upsampler``). Runs in fp32 outside autocast, like the official SwinIR wrapper."""
        with torch.autocast(device_type=self.device.type, enabled=False):
            if self.net_upsampler is None:
                return bicubic_upscale(lq01.float(), self.scale)
            return self.net_upsampler(lq01.float()).float()

    ENCODE_IN_FP32 = False
    """Whether the training encodes leave ``train.amp``'s autocast: the official LPNSR step encodes under
    ``no_grad`` before it enters autocast; ResShift's trainer encodes inside it."""

    def _encode_precision(self) -> contextlib.AbstractContextManager:
        if self.ENCODE_IN_FP32:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return contextlib.nullcontext()

    @torch.no_grad()
    def encode_condition(self, lq01: Tensor) -> Tensor:
        """``y``: the latent of the pre-upsampled LR, (B, C, sh/d, sw/d), float32."""
        with self._encode_precision():
            return self.net_ae.encode(self.upsample(lq01) * 2 - 1).float()

    @torch.no_grad()
    def encode_target(self, gt01: Tensor) -> Tensor:
        """``x0``: the (unquantised) latent of the HR image in [0, 1], float32."""
        with self._encode_precision():
            return self.net_ae.encode(gt01 * 2 - 1).float()

    def decode(self, latent: Tensor) -> Tensor:
        """Quantised decode (straight-through in training), (B,3,H,W) in about [-1, 1], not clamped, float32."""
        return self.net_ae.decode(latent, quantize=True).float()

    # ------------------------------------------------------------------------------------------ sampling
    def _sampling_parts(self) -> Tuple[nn.Module, Optional[nn.Module], str]:
        """``(denoiser, noise_predictor or None, noise)`` of the validation chain, ``noise`` being the pipeline's
        ``'learned'`` or ``'gaussian'``."""
        raise NotImplementedError

    def _sampling_networks(self) -> List[nn.Module]:
        """The networks to put in eval mode while sampling."""
        return [self.inference_network()]

    def inference_network(self) -> nn.Module:
        """The trained network used for sampling: ``net_g_ema`` when EMA is on, else ``net_g``."""
        return self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g

    def sampling_pipeline(self) -> LPNSRPipeline:
        """The inference pipeline over this model's current networks (``net_g_ema`` when EMA is on): one piece, no
        colour correction, ``pad_mode: multiple``, ``train.amp``'s precision, the pre-upsampler self-ensembled when
        ``val.upsampler_self_ensemble`` is true (default false). Validation runs exactly this."""
        denoiser, noise_predictor, noise = self._sampling_parts()
        upsampler = self.net_upsampler if self.net_upsampler is not None else LPNSRBicubicUpsampler(scale=self.scale)
        defaults = InferenceDefaults(scale=self.scale, pad_mode='multiple', tile=0, noise=noise, color_fix='none',
                                     seed=self.val_seed, upsampler_self_ensemble=self.val_self_ensemble)
        return LPNSRPipeline(
            upsampler=upsampler, autoencoder=self.net_ae, denoiser=self.get_bare_model(denoiser),
            diffusion=self.diffusion, defaults=defaults,
            noise_predictor=None if noise_predictor is None else self.get_bare_model(noise_predictor))

    def super_resolve(self, lq01: Tensor, *, seed: int) -> Tensor:
        """The seeded inference pipeline (:meth:`sampling_pipeline`): LR (B,3,h,w) in [0,1] -> SR (B,3,sh,sw) in
        [0,1], float32; the same output as ``LPNSRPipeline`` with these weights, ``seed``, ``tile=0`` and no colour
        correction."""
        with contextlib.ExitStack() as stack:
            for net in self._sampling_networks():
                stack.enter_context(eval_mode(net))
            return self.sampling_pipeline()(lq01, seed=seed, precision=self.sampling_precision)

    def test(self) -> None:
        """Validation/test forward: ``self.output`` = the seeded chain's SR of ``self.lq`` (``val.seed``)."""
        self.output = self.super_resolve(self.lq, seed=self.val_seed)

    # ------------------------------------------------------------------------------------------ saving / resuming
    def trained_networks_finite(self) -> bool:
        """False (and an error logged) when a trained network holds a non-finite value: such weights are not saved."""
        nets = {name: getattr(self, name, None) for name in ('net_g', 'net_g_ema', 'net_d')}
        bad = [name for name, net in nets.items() if net is not None and not all_finite(net)]
        if bad:
            self.logger.error(f'{bad} contain non-finite weights: the checkpoint is NOT written')
        return not bad

    def save(self, epoch: int, current_iter: int) -> None:
        """``net_g`` (``params`` + ``params_ema``), subclasses' extra nets, and the training state; nothing is
        written when a trained network is not finite."""
        if not self.trained_networks_finite():
            return
        if hasattr(self, 'net_g_ema'):
            self.save_network([self.net_g, self.net_g_ema], 'net_g', current_iter, param_key=['params', 'params_ema'])
        else:
            self.save_network(self.net_g, 'net_g', current_iter)
        self.save_extra_networks(current_iter)
        self.save_training_state(epoch, current_iter)

    def save_extra_networks(self, current_iter: int) -> None:
        """Hook: subclasses save their further trained networks."""

    @master_only
    def save_network(self, net, net_label: str, current_iter: int, param_key='params') -> None:
        """BasicSR's layout (``{param_key: state_dict}``, ``module.`` stripped, on CPU), written atomically."""
        label = 'latest' if current_iter == -1 else current_iter
        save_path = os.path.join(self.opt['path']['models'], f'{net_label}_{label}.pth')
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError('save_network: one param_key per network is needed')
        payload = {}
        for net_, key in zip(nets, keys):
            state = self.get_bare_model(net_).state_dict()
            payload[key] = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v.detach().cpu())
                                       for k, v in state.items())
        save_state_dict(save_path, payload)  # atomic: temp file + os.replace

    @master_only
    def save_training_state(self, epoch: int, current_iter: int) -> None:
        """BasicSR's ``.state`` (epoch, iter, optimizers, schedulers) plus ``grad_scalers``, written atomically."""
        if current_iter == -1:
            return
        state = {
            'epoch': epoch,
            'iter': current_iter,
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            'grad_scalers': {name: scaler.state_dict() for name, scaler in self.grad_scalers.items()},
        }
        # save_state_dict's torch branch writes any nested dict atomically (temp file + os.replace)
        save_state_dict(os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'), state)

    def resume_training(self, resume_state: Dict) -> None:
        """Optimizers and schedulers (BasicSR) and the GradScalers."""
        super().resume_training(resume_state)
        saved = resume_state.get('grad_scalers') or {}
        for name, scaler in self.grad_scalers.items():
            if saved.get(name):
                scaler.load_state_dict(saved[name])
            elif scaler.is_enabled():
                self.logger.warning(f'the resume state has no GradScaler state for {name!r}: it starts afresh')

