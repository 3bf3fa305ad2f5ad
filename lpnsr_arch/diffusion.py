"""The one residual-shifting diffusion core (ResShift, Yue et al. 2023; LPNSR's learned-noise reverse chain).

Everything that knows the schedule lives here: the exponential eta schedule, the forward process q(x_t | x_0, y),
the denoiser input scaling, the posterior q(x_{t-1} | x_t, x_0), the prior and the reverse loop. Training
(``models/``), inference (``pipeline.py``) and the benchmarks all call this module; none of them recomputes a
schedule number.

Notation (the paper's): ``y`` is the latent of the pre-upsampled LR image, ``x0`` the latent of the HR image,
``eta_t`` the shift schedule (``sqrt_etas`` stores sqrt(eta_t)), ``kappa`` the noise scale. Timesteps are the raw
integer indices ``0..T-1`` (the official models receive these, not a ×1000 rescale).

The noise used at each reverse step is an argument (a :class:`NoiseSource`): plain Gaussian noise gives ResShift,
the learned predictor gives LPNSR, and :class:`NormalDraws` lets a caller inject the standard-normal draws exactly
(conformance vectors, seed-exact reproducibility).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from lpnsr_arch.messages import from_option_block, integer_at_least

__all__ = [
    'DiffusionConfig', 'ResShiftDiffusion', 'exponential_sqrt_etas', 'NormalDraws', 'NoiseSource', 'GaussianNoise',
    'LearnedNoise', 'Denoiser'
]


def exponential_sqrt_etas(num_timesteps: int, min_noise_level: float, etas_end: float, kappa: float,
                          power: float) -> np.ndarray:
    """ResShift's ``exponential`` schedule: returns sqrt(eta_t), float64, shape (T,).

    ``sqrt_eta_0 = min(min_noise_level / kappa, min_noise_level)`` and ``sqrt_eta_{T-1} = etas_end``; the steps in
    between grow geometrically on a ``linspace(0, 1, T) ** power`` time axis.
    """
    if num_timesteps < 2:
        raise ValueError(f'num_timesteps must be >= 2, got {num_timesteps}')
    etas_start = min(min_noise_level / kappa, min_noise_level)
    increaser = math.exp(1 / (num_timesteps - 1) * math.log(etas_end / etas_start))
    base = np.ones([num_timesteps]) * increaser
    power_timestep = np.linspace(0, 1, num_timesteps, endpoint=True)**power * (num_timesteps - 1)
    return np.power(base, power_timestep) * etas_start


@dataclass(frozen=True)
class DiffusionConfig:
    """The schedule and input-scaling options (ResShift v3 / LPNSR defaults).

    Attributes:
        num_timesteps: T, the length of the chain (4 for LPNSR).
        kappa: noise scale; the forward std at step t is ``kappa * sqrt(eta_t)``.
        min_noise_level: sets ``sqrt_eta_0`` (see :func:`exponential_sqrt_etas`).
        etas_end: ``sqrt_eta_{T-1}`` (0.99: the final sqrt(eta), not eta).
        eta_power: the exponent of the schedule's time axis.
        normalize_input: divide the denoiser input by the forward std (see :meth:`ResShiftDiffusion.scale_input`).
        latent_flag: True for a latent (VQ) space, False for pixel space; picks the input divisor.
        predict_type: what the denoiser outputs: ``'xstart'`` (x0 itself: every LPNSR/ResShift v3 checkpoint) or
            ``'residual'`` (ResShift's ``RESIDUAL`` type, the residual ``y - x0``, so ``x0 = y - output``: a zero
            output is the pre-upsampled image itself).
        eta_schedule: only ``'exponential'`` is implemented (the one every LPNSR/ResShift v3 model uses).
    """
    num_timesteps: int = 4
    kappa: float = 2.0
    min_noise_level: float = 0.2
    etas_end: float = 0.99
    eta_power: float = 0.3
    normalize_input: bool = True
    latent_flag: bool = True
    eta_schedule: str = 'exponential'
    predict_type: str = 'xstart'

    def __post_init__(self) -> None:
        """Refuse values the schedule cannot use, naming the ``diffusion.<key>`` option (before any network runs)."""
        problems = []
        try:
            object.__setattr__(self, 'num_timesteps', integer_at_least(self.num_timesteps, 'num_timesteps', 2))
        except ValueError as error:
            problems.append(str(error))
        for key, low_open, high in (('kappa', 0.0, None), ('min_noise_level', 0.0, None), ('etas_end', 0.0, 1.0),
                                    ('eta_power', 0.0, None)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(value) or value <= low_open or (high is not None and value > high):
                bound = f'in (0, {high}]' if high is not None else '> 0'
                problems.append(f'{key} must be a number {bound}, got {value!r}')
        for key in ('normalize_input', 'latent_flag'):
            if not isinstance(getattr(self, key), bool):
                problems.append(f'{key} must be true or false, got {getattr(self, key)!r}')
        if problems:
            raise ValueError('diffusion options: ' + '; '.join(problems))

    @classmethod
    def from_dict(cls, opt: Optional[Dict]) -> 'DiffusionConfig':
        """Build from an options dict; an unknown key raises a ``KeyError`` naming it."""
        return from_option_block(cls, opt, 'diffusion')


# --------------------------------------------------------------------------------------------------------------
# Noise: standard-normal draws and the per-step noise sources
# --------------------------------------------------------------------------------------------------------------
class NormalDraws:
    """Standard-normal draws, either from a ``torch.Generator`` or from a list of injected tensors.

    Calling ``draws(like)`` returns a tensor with the shape, dtype and device of ``like``. With injected tensors the
    draws are consumed in order (and moved to ``like``'s device and dtype); running out raises an error.
    """

    def __init__(self, generator: Optional[torch.Generator] = None, injected: Optional[Sequence[Tensor]] = None):
        self.generator = generator
        self._injected: Optional[List[Tensor]] = list(injected) if injected is not None else None

    def __call__(self, like: Tensor) -> Tensor:
        if self._injected is not None:
            if not self._injected:
                raise RuntimeError('NormalDraws: all injected draws have been used')
            draw = self._injected.pop(0)
            if draw.shape != like.shape:
                raise ValueError(f'injected draw has shape {tuple(draw.shape)}, expected {tuple(like.shape)}')
            return draw.to(device=like.device, dtype=like.dtype)
        if self.generator is None:
            return torch.randn_like(like)
        return torch.randn(like.shape, generator=self.generator, device=self.generator.device,
                           dtype=like.dtype).to(like.device)

    @classmethod
    def seeded(cls, seed: int, device: torch.device | str = 'cpu') -> 'NormalDraws':
        """Draws from a fresh generator on ``device`` seeded with ``seed`` (same seed, same draws)."""
        gen = torch.Generator(device=device)
        gen.manual_seed(int(seed))
        return cls(generator=gen)


class NoiseSource(Protocol):
    """The noise of one reverse step: a tensor shaped like ``x_t`` with (ideally) unit variance.

    ``x_t`` is the current latent (un-normalised), ``pred_x0`` the denoiser's x0 prediction, ``lq`` the LR image in
    [-1, 1] at latent resolution, ``t`` the integer step index.
    """

    def __call__(self, x_t: Tensor, pred_x0: Tensor, lq: Tensor, t: int) -> Tensor:
        ...


class GaussianNoise:
    """ResShift's noise: an independent standard-normal draw at every step."""

    def __init__(self, draws: Optional[NormalDraws] = None):
        self.draws = draws or NormalDraws()

    def __call__(self, x_t: Tensor, pred_x0: Tensor, lq: Tensor, t: int) -> Tensor:
        return self.draws(x_t)


class LearnedNoise:
    """LPNSR's noise: a sample (or the mean) of the LR-guided noise predictor's Gaussian.

    ``predictor(z_t, pred_x0, lq, timesteps, mode='dist')`` must return ``(mean, logvar)``. In ``'sample'`` mode the
    noise is ``mean + exp(0.5 * logvar) * draw`` with ``draw`` from :class:`NormalDraws` (what the official training
    and inference use); ``'mean'`` returns the mean (deterministic).
    """

    def __init__(self, predictor: torch.nn.Module, draws: Optional[NormalDraws] = None, mode: str = 'sample'):
        if mode not in ('sample', 'mean'):
            raise ValueError(f"LearnedNoise mode must be 'sample' or 'mean', got {mode!r}")
        self.predictor = predictor
        self.draws = draws or NormalDraws()
        self.mode = mode

    def __call__(self, x_t: Tensor, pred_x0: Tensor, lq: Tensor, t: int) -> Tensor:
        timesteps = torch.full((x_t.shape[0], ), t, device=x_t.device, dtype=torch.long)
        mean, logvar = self.predictor(x_t, pred_x0, lq, timesteps, mode='dist')
        if self.mode == 'mean':
            return mean
        return mean + torch.exp(0.5 * logvar) * self.draws(mean)


Denoiser = Callable[..., Tensor]
PREDICT_TYPES = ('xstart', 'residual')
StepCallback = Callable[[Dict[str, object]], None]


# --------------------------------------------------------------------------------------------------------------
# The diffusion
# --------------------------------------------------------------------------------------------------------------
class ResShiftDiffusion:
    """Residual-shifting diffusion: schedule, forward process, posterior, prior and reverse loop.

    All per-step constants are computed once in float64 (as the official code does) and handed out as float32
    tensors cached per device, so the reverse loop does no host work beyond indexing Python floats.
    """

    def __init__(self, config: Optional[DiffusionConfig] = None):
        self.config = config or DiffusionConfig()
        c = self.config
        if c.eta_schedule != 'exponential':
            raise ValueError(f"eta_schedule {c.eta_schedule!r} is not supported (only 'exponential')")
        if c.predict_type not in PREDICT_TYPES:
            raise ValueError(f'diffusion predict_type must be one of {PREDICT_TYPES}, got {c.predict_type!r}')
        self.num_timesteps = c.num_timesteps
        self.kappa = c.kappa
        sqrt_etas = exponential_sqrt_etas(c.num_timesteps, c.min_noise_level, c.etas_end, c.kappa, c.eta_power)
        etas = sqrt_etas**2
        if not (np.all(etas > 0) and np.all(etas <= 1)):
            raise ValueError(f'the schedule must satisfy 0 < eta <= 1, got {etas}')
        etas_prev = np.append(0.0, etas[:-1])
        alpha = etas - etas_prev
        posterior_variance = c.kappa**2 * etas_prev / etas * alpha
        posterior_variance_clipped = np.append(posterior_variance[1], posterior_variance[1:])
        self.sqrt_etas = sqrt_etas
        self.etas = etas
        self.etas_prev = etas_prev
        self.alpha = alpha
        self.posterior_variance = posterior_variance
        self.posterior_variance_clipped = posterior_variance_clipped
        self.posterior_log_variance_clipped = np.log(posterior_variance_clipped)
        self.posterior_mean_coef1 = etas_prev / etas
        self.posterior_mean_coef2 = alpha / etas
        if c.normalize_input and c.latent_flag:
            self.input_divisor = np.sqrt(c.kappa**2 * etas + 1)
        elif c.normalize_input:
            self.input_divisor = 3 * c.kappa * sqrt_etas + 1
        else:
            self.input_divisor = np.ones_like(etas)
        # the posterior standard deviation used by a reverse step (0 at t = 0, where the step returns x0)
        self.posterior_std = np.exp(0.5 * self.posterior_log_variance_clipped) * (np.arange(c.num_timesteps) > 0)
        self._tensor_cache: Dict[Tuple[str, torch.device], Tensor] = {}

    # ---------------------------------------------------------------------------------------------- constants
    def table(self) -> Dict[str, np.ndarray]:
        """Every per-step constant (float64), keyed by the official names."""
        return {
            'sqrt_etas': self.sqrt_etas,
            'etas': self.etas,
            'posterior_mean_coef1': self.posterior_mean_coef1,
            'posterior_mean_coef2': self.posterior_mean_coef2,
            'posterior_variance': self.posterior_variance,
            'posterior_log_variance_clipped': self.posterior_log_variance_clipped,
            'input_divisor': self.input_divisor,
        }

    def _tensor(self, name: str, device: torch.device) -> Tensor:
        key = (name, torch.device(device))
        cached = self._tensor_cache.get(key)
        if cached is None:
            cached = torch.as_tensor(getattr(self, name), dtype=torch.float32, device=device)
            self._tensor_cache[key] = cached
        return cached

    def _extract(self, name: str, t: Tensor, ndim: int) -> Tensor:
        """The constant ``name`` at integer timesteps ``t`` (B,), shaped (B, 1, 1, ...) for broadcasting."""
        values = self._tensor(name, t.device)[t]
        return values.reshape(t.shape[0], *([1] * (ndim - 1)))

    # ---------------------------------------------------------------------------------------------- forward
    def q_sample(self, x0: Tensor, y: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Forward process: ``x_t = x0 + eta_t (y - x0) + kappa sqrt(eta_t) noise``. ``t``: int64 (B,)."""
        eta = self._extract('etas', t, x0.ndim)
        sqrt_eta = self._extract('sqrt_etas', t, x0.ndim)
        return x0 + eta * (y - x0) + self.kappa * sqrt_eta * noise

    def scale_input(self, x_t: Tensor, t: Tensor | int) -> Tensor:
        """The denoiser input: ``x_t / sqrt(kappa^2 eta_t + 1)`` (latent) or ``/ (3 kappa sqrt(eta_t) + 1)`` (pixel).

        ``t``: one step for the whole batch (a Python or numpy integer, or a 0-d tensor) or int64 (B,).
        """
        if isinstance(t, numbers.Integral) or (isinstance(t, Tensor) and t.ndim == 0):
            return x_t / float(self.input_divisor[int(t)])
        return x_t / self._extract('input_divisor', t, x_t.ndim)

    def prior_sample(self, y: Tensor, noise: Tensor) -> Tensor:
        """``x_{T-1} = y + kappa sqrt(eta_{T-1}) noise``: the start of the reverse chain."""
        return y + self.kappa * float(self.sqrt_etas[-1]) * noise

    def x0_from_output(self, output: Tensor, y: Tensor) -> Tensor:
        """The x0 estimate from the denoiser's raw output (see :attr:`DiffusionConfig.predict_type`)."""
        return output if self.config.predict_type == 'xstart' else y - output

    # ---------------------------------------------------------------------------------------------- posterior
    def posterior_mean(self, x_t: Tensor, x0: Tensor, t: int) -> Tensor:
        """Mean of q(x_{t-1} | x_t, x0): ``(eta_{t-1}/eta_t) x_t + (alpha_t/eta_t) x0``."""
        return float(self.posterior_mean_coef1[t]) * x_t + float(self.posterior_mean_coef2[t]) * x0

    def reverse_step(self, x_t: Tensor, pred_x0: Tensor, t: int, noise: Tensor) -> Tensor:
        """One step: ``x_{t-1} = mean + std_t noise`` with ``std_0 = 0`` (the last step returns the x0 prediction)."""
        mean = self.posterior_mean(x_t, pred_x0, t)
        std = float(self.posterior_std[t])
        return mean + std * noise if std > 0 else mean

    def timesteps(self, t: int, batch: int, device: torch.device) -> Tensor:
        """``t`` as an int64 (B,) tensor on ``device`` (made on the device: no host copy)."""
        return torch.full((batch, ), t, dtype=torch.long, device=device)

    # ---------------------------------------------------------------------------------------------- reverse loop
    def sample(self,
               y: Tensor,
               lq: Tensor,
               denoiser: Denoiser,
               noise_source: NoiseSource,
               prior_noise: Tensor,
               *,
               callback: Optional[StepCallback] = None,
               final_draws: Optional[NormalDraws] = None) -> Tensor:
        """The reverse chain from ``y`` to the x0 estimate, in latent space (no clamp, as the official sampler).

        Args:
            y: latent of the pre-upsampled LR image, (B, C, h, w).
            lq: LR image in [-1, 1], (B, 3, h, w): the denoiser's (and noise predictor's) condition.
            denoiser: ``denoiser(scaled_x_t, timesteps, lq=lq) -> output``: x0, or ``y - x0`` with
                ``predict_type='residual'`` (:meth:`x0_from_output`).
            noise_source: the noise of each intermediate step (:class:`GaussianNoise`, :class:`LearnedNoise`, ...).
            prior_noise: the standard-normal draw for the prior, shaped like ``y``.
            callback: called after each step with ``{'t', 'x_t', 'pred_x0'}``.
            final_draws: if given, one draw shaped like ``y`` is taken from it after the last step without being
                used. The official sampler evaluates the noise predictor at t = 0 too and discards the result; this
                keeps a shared generator's stream aligned with it (for seed-exact reproduction across images) without
                paying for the network call.

        Returns:
            The final latent x0 estimate, (B, C, h, w). Gradients flow when called with grad enabled (training).
        """
        x = self.prior_sample(y, prior_noise)
        pred_x0 = x
        for t in reversed(range(self.num_timesteps)):
            timesteps = self.timesteps(t, x.shape[0], x.device)
            pred_x0 = self.x0_from_output(denoiser(self.scale_input(x, t), timesteps, lq=lq), y)
            if t > 0:
                noise = noise_source(x, pred_x0, lq, t)
                x = self.reverse_step(x, pred_x0, t, noise)
            else:
                x = pred_x0
            if callback is not None:
                callback({'t': t, 'x_t': x, 'pred_x0': pred_x0})
        if final_draws is not None:
            final_draws(pred_x0)
        return x

    # ---------------------------------------------------------------------------------------------- training
    def training_inputs(self, x0: Tensor, y: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """The denoiser input of the ResShift loss at timesteps ``t``: ``scale_input(q_sample(x0, y, t, noise), t)``."""
        return self.scale_input(self.q_sample(x0, y, t, noise), t)

    def sample_timesteps(self, batch: int, device: torch.device, generator: Optional[torch.Generator] = None) -> Tensor:
        """Uniform integer timesteps in {0, ..., T-1}, (B,) int64 on ``device`` (ResShift's training distribution).
        A ``generator`` draws on its own device (a CPU generator can seed a GPU run)."""
        if generator is None:
            return torch.randint(0, self.num_timesteps, (batch, ), device=device)
        drawn = torch.randint(0, self.num_timesteps, (batch, ), device=generator.device, generator=generator)
        return drawn.to(device)
