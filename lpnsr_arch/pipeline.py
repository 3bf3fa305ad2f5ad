"""LPNSR inference: LR image in [0, 1] -> 4x SR image in [0, 1].

The steps follow the official ``NoisePredictorInference`` (see the spec, "LPNSR inference"):

1. pad bottom/right to a multiple of the network size (edge-duplicating reflect, cv2 ``BORDER_REFLECT``), then, with
   ``pad_mode='official'``, to the next power of two (reflect without edge duplication, numpy ``'reflect'``);
2. per piece (the whole image, or each tile when tiling): :meth:`LPNSRPipeline.sample_func` = pre-upsample (fp32,
   not clamped) -> encode -> the 4-step reverse chain (:mod:`lpnsr_arch.diffusion`) -> quantised decode -> clamp;
3. Gaussian blending of the tiles (:mod:`lpnsr_arch.tiling`), ``x 0.5 + 0.5``, wavelet colour correction against the
   bicubic-upsampled padded LR (:mod:`lpnsr_arch.color`), clamp to [0, 1], crop the padding away.

Randomness is explicit: the standard-normal noise comes from a :class:`LatentNoiseField` seeded from ``seed``, defined
over the whole latent but generated block by block for the box a tile needs, so a seed gives the same noise at each
place whatever the tiling, and the same image whatever ``tile_batch`` is. Injected draws (``draws=``) reproduce the
official chain exactly.
"""
from __future__ import annotations

import contextlib
import copy
import difflib
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from basicsr.archs import build_network  # lpnsr_arch/__init__ has applied the torchvision shim by now
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from lpnsr_arch.acceleration import CapturedGraphs, GraphReplayed
from lpnsr_arch.archs.upsampler_arch import bicubic_upscale, dihedral_self_ensemble
from lpnsr_arch.color import adain_color_fix, wavelet_color_fix
from lpnsr_arch.diffusion import DiffusionConfig, GaussianNoise, LearnedNoise, ResShiftDiffusion
from lpnsr_arch.messages import from_option_block, integer_at_least
from lpnsr_arch.tiling import Tile, process_tiled
from lpnsr_arch.weights import (REPO_ROOT, check_checkpoints_exist, load_network_from_options,  # noqa: F401
                                resolve_checkpoint, resolve_project_file)  # REPO_ROOT, resolve_checkpoint: re-exported

__all__ = [
    'LPNSRPipeline', 'InferenceDefaults', 'LatentNoiseField', 'CroppedDraws', 'mirror_pad', 'pad_lr', 'PRECISIONS',
    'lr_size_multiple', 'NOISE_KINDS', 'COLOR_FIXES', 'PAD_MODES', 'load_options'
]

logger = logging.getLogger('basicsr')

PRECISIONS: Dict[str, torch.dtype] = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
NOISE_KINDS = ('learned', 'gaussian')
NOISE_MODES = ('sample', 'mean')
COLOR_FIXES = ('wavelet', 'adain', 'none')
COMPILE_SCOPES = ('diffusion', 'all')
"""What compilation or CUDA graphs cover: the denoiser and noise predictor, or every network (``accelerate``)."""
PAD_MODES = ('official', 'multiple')


# --------------------------------------------------------------------------------------------------------------
# Padding
# --------------------------------------------------------------------------------------------------------------
def _mirror_indices(length: int, pad: int, edge_duplicate: bool, device: torch.device) -> Tensor:
    """Indices ``0..length+pad-1`` folded back into ``[0, length)`` by mirroring at the end (any pad size).

    ``edge_duplicate=True`` repeats the border pixel (numpy ``'symmetric'`` / cv2 ``BORDER_REFLECT``: ``...c b a | a b
    c``); ``False`` does not (numpy ``'reflect'``: ``...c b | a b c``).
    """
    index = torch.arange(length + pad, device=device)
    if edge_duplicate:
        period = 2 * length
        folded = index % period
        return torch.where(folded < length, folded, period - 1 - folded)
    if length == 1:
        return torch.zeros_like(index)
    period = 2 * length - 2
    folded = index % period
    return torch.where(folded < length, folded, period - folded)


def mirror_pad(image: Tensor, pad_bottom: int, pad_right: int, *, edge_duplicate: bool) -> Tensor:
    """Pad (B, C, H, W) ``image`` at the bottom and right by mirroring (see :func:`_mirror_indices`)."""
    if pad_bottom == 0 and pad_right == 0:
        return image
    rows = _mirror_indices(image.shape[-2], pad_bottom, edge_duplicate, image.device)
    cols = _mirror_indices(image.shape[-1], pad_right, edge_duplicate, image.device)
    return image.index_select(-2, rows).index_select(-1, cols)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _next_power_of_two(value: int) -> int:
    return 1 << (value - 1).bit_length()


def pad_lr(lr01: Tensor, multiple: int, pad_mode: str) -> Tuple[Tensor, Tuple[int, int]]:
    """Pad an LR batch (B, C, H, W) as the official inference does; returns ``(padded, (pad_h, pad_w))``.

    ``pad_mode='official'``: to a multiple of ``multiple`` (edge-duplicating reflect), then to the next power of two
    (reflect). ``'multiple'``: only the first step (less work; outputs differ from the official ones near borders).
    """
    if pad_mode not in PAD_MODES:
        raise ValueError(f'pad_mode must be one of {PAD_MODES}, got {pad_mode!r}')
    height, width = lr01.shape[-2:]
    mid_h, mid_w = _round_up(height, multiple), _round_up(width, multiple)
    padded = mirror_pad(lr01, mid_h - height, mid_w - width, edge_duplicate=True)
    if pad_mode == 'official':
        full_h, full_w = _next_power_of_two(mid_h), _next_power_of_two(mid_w)
        padded = mirror_pad(padded, full_h - mid_h, full_w - mid_w, edge_duplicate=False)
    return padded, (padded.shape[-2] - height, padded.shape[-1] - width)


def lr_size_multiple(scale: int, downscale: int, latent_multiple: int) -> int:
    """The smallest LR side multiple whose ``scale``-times up-sampled latent side is a multiple of
    ``latent_multiple`` (latent side = LR side * scale / downscale)."""
    needed = downscale * latent_multiple
    return needed // math.gcd(scale, needed)


# --------------------------------------------------------------------------------------------------------------
# Seeds and draws
# --------------------------------------------------------------------------------------------------------------
class LatentNoiseField:
    """The standard-normal draws of one forward call, defined over the whole padded latent but made block by block.

    Draw ``k`` at latent position (row, col) comes from the ``block x block`` tile of noise that a generator seeded
    with ``(seed, k, row // block, col // block)`` produces (float32, drawn on the CPU and moved to ``device``, so a
    seed gives the same noise on a GPU as on the CPU), the same for every image of the batch: an image gets the same
    noise, hence the same output, alone as at any place in a batch. A tile sees exactly the noise the untiled image
    has at the same place: overlapping tiles agree, the result does not depend on ``tile_batch`` (up to float
    rounding, which a VQ decode's codebook lookup can turn into a few flipped codes), and memory stays
    bounded by the tile size (no image-sized noise buffer). (The official chopper draws fresh noise per patch from one
    global stream; seeded outputs are not draw-for-draw the official ones, which injected draws reproduce exactly.)
    """

    CACHE_BYTES = 64 * 2**20
    """Blocks already made are kept (least recently used first out) up to this size, so that the blocks overlapping
    tiles share are made once; memory stays bounded whatever the image size."""

    def __init__(self, seed: int, shape: Sequence[int], device: torch.device, block: int = 64):
        self.shape = tuple(int(side) for side in shape)
        self.device = torch.device(device)
        self.seed = int(seed)
        self.block = int(block)
        self._blocks: 'OrderedDict[Tuple[int, int, int], Tensor]' = OrderedDict()
        self._max_blocks = max(1, self.CACHE_BYTES // (self.shape[1] * self.block**2 * 4))

    def _block_seed(self, index: int, block_row: int, block_col: int) -> int:
        mixed = self.seed
        for part in (index, block_row, block_col):
            mixed = (mixed * 0x9E3779B97F4A7C15 + part + 1) % (2**63 - 1)
        return mixed

    def _block_noise(self, index: int, block_row: int, block_col: int) -> Tensor:
        """(1, C, block, block): broadcast over the batch by :meth:`crop`."""
        key = (index, block_row, block_col)
        noise = self._blocks.get(key)
        if noise is not None:
            self._blocks.move_to_end(key)
            return noise
        generator = torch.Generator()  # on the CPU: the same seed gives the same noise on every device
        generator.manual_seed(self._block_seed(index, block_row, block_col))
        noise = torch.randn((1, self.shape[1], self.block, self.block), generator=generator).to(self.device)
        self._blocks[key] = noise
        if len(self._blocks) > self._max_blocks:
            self._blocks.popitem(last=False)
        return noise

    def crop(self, index: int, rows: slice, cols: slice) -> Tensor:
        """Draw ``index`` (0: the prior noise) on the latent box ``rows`` x ``cols``: (B, C, h, w) float32."""
        top, bottom, _ = rows.indices(self.shape[2])
        left, right, _ = cols.indices(self.shape[3])
        out = torch.empty((*self.shape[:2], bottom - top, right - left), device=self.device)
        b = self.block
        for block_row in range(top // b, -(-bottom // b)):
            for block_col in range(left // b, -(-right // b)):
                noise = self._block_noise(index, block_row, block_col)
                r0, r1 = max(top, block_row * b), min(bottom, (block_row + 1) * b)
                c0, c1 = max(left, block_col * b), min(right, (block_col + 1) * b)
                out[:, :, r0 - top:r1 - top, c0 - left:c1 - left] = noise[:, :, r0 - block_row * b:r1 - block_row * b,
                                                                          c0 - block_col * b:c1 - block_col * b]
        return out


class CroppedDraws:
    """``draws(like)`` for a batch of tiles: call ``k`` returns field ``k`` cropped at every tile's latent box.

    ``boxes`` are ``(rows, cols)`` latent slices, one per tile, in the tile-major batch order of
    :func:`~lpnsr_arch.tiling.process_tiled`; the crops are concatenated along the batch dimension and cast to
    ``like``'s dtype. The first ``prepare`` draws are made when the object is created, so that the reverse loop
    that consumes them does no host work (generator seeding, block loops); later calls make theirs on demand.
    """

    def __init__(self, noise_field: LatentNoiseField, boxes: Sequence[Tuple[slice, slice]], *, prepare: int = 0):
        self.noise_field = noise_field
        self.boxes = list(boxes)
        self.calls = 0
        self._prepared = [self._crop(index) for index in range(prepare)]

    def _crop(self, index: int) -> Tensor:
        return torch.cat([self.noise_field.crop(index, rows, cols) for rows, cols in self.boxes], dim=0)

    def __call__(self, like: Tensor) -> Tensor:
        draw = self._prepared[self.calls] if self.calls < len(self._prepared) else self._crop(self.calls)
        self.calls += 1
        if draw.shape != like.shape:
            raise ValueError(f'noise crop {tuple(draw.shape)} does not match the requested {tuple(like.shape)}')
        return draw.to(device=like.device, dtype=like.dtype)


def _random_base_seed() -> int:
    """A fresh seed from torch's global generator (so ``torch.manual_seed`` makes ``seed=None`` reproducible)."""
    return int(torch.randint(0, 2**62, (1, ), dtype=torch.int64).item())


# --------------------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InferenceDefaults:
    """The ``inference:`` block of an options file: defaults of :meth:`LPNSRPipeline.forward` and the CLI.

    The values are the official LPNSR settings.
    """
    scale: int = 4
    pad_mode: str = 'official'
    tile: Optional[int] = 256
    tile_overlap: int = 128
    tile_batch: int = 1
    noise: str = 'learned'
    color_fix: str = 'wavelet'
    seed: int = 12345
    upsampler_self_ensemble: bool = False
    """Average the pre-upsampler over the eight flips and quarter turns of the LR (EDSR's x8 self-ensemble; eight
    times its cost). Not in the official pipeline."""

    def __post_init__(self) -> None:
        """Refuse values :meth:`LPNSRPipeline.forward` cannot use, naming the ``inference.<key>`` option."""
        problems = []
        for key, choices in (('pad_mode', PAD_MODES), ('noise', NOISE_KINDS), ('color_fix', COLOR_FIXES)):
            if getattr(self, key) not in choices:
                problems.append(f'{key} must be one of {list(choices)}, got {getattr(self, key)!r}')
        for key, low in (('scale', 1), ('tile_overlap', 0), ('tile_batch', 1), ('seed', 0), ('tile', 0)):
            if key == 'tile' and self.tile is None:
                continue  # ~: no tiling
            try:
                object.__setattr__(self, key, integer_at_least(getattr(self, key), key, low))  # numpy ints become ints
            except ValueError as error:
                problems.append(str(error))
        if not isinstance(self.upsampler_self_ensemble, bool):
            problems.append(f'upsampler_self_ensemble must be true or false, got {self.upsampler_self_ensemble!r}')
        if not problems and self.tile and self.tile_overlap >= self.tile:
            problems.append(f'tile_overlap must be smaller than tile ({self.tile}), got {self.tile_overlap}')
        if problems:
            raise ValueError('inference options: ' + '; '.join(problems))

    @classmethod
    def from_dict(cls, opt: Optional[Mapping]) -> 'InferenceDefaults':
        """Build from the ``inference:`` options block; an unknown key raises a ``KeyError`` naming it."""
        return from_option_block(cls, opt, 'inference')


def _yaml_problem(error: Exception) -> str:
    """What a YAML parser error says went wrong, and where (1-based line and column), on one line."""
    problem = getattr(error, 'problem', None) or getattr(error, 'context', None) or 'cannot be parsed'
    mark = getattr(error, 'problem_mark', None) or getattr(error, 'context_mark', None)
    where = f' at line {mark.line + 1}, column {mark.column + 1}' if mark is not None else ''
    return f'{problem}{where}'


def load_options(options: Union[str, Path, Mapping]) -> Dict:
    """An options dict from a YAML file path or a mapping (deep-copied). A relative path is looked up in the
    current folder, then in the repository or the installed data (:func:`lpnsr_arch.weights.resolve_project_file`:
    ``options/demo/inference_lpnsr_demo.yml`` works from any folder).

    Raises ``FileNotFoundError`` (no such file) or ``ValueError`` (not valid YAML, or not a mapping), naming the file.
    """
    if isinstance(options, Mapping):
        return copy.deepcopy(dict(options))
    path = resolve_project_file(options, f'options file {options}')
    import yaml  # BasicSR's own dependency
    with path.open('r', encoding='utf-8') as handle:
        try:
            loaded = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ValueError(f'options file {path} is not valid YAML: {_yaml_problem(error)}') from error
    if not isinstance(loaded, dict):
        raise ValueError(f'options file {path} must hold a YAML mapping, got {type(loaded).__name__}')
    return loaded


# --------------------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------------------
class LPNSRPipeline(nn.Module):
    """The LPNSR inference pipeline (``upsampler`` -> ``autoencoder`` -> ``denoiser`` chain -> decode).

    Args:
        upsampler: pre-upsampler, ``upsampler(img01) -> img01 x scale`` (SwinIR-L or bicubic).
        autoencoder: ``encode(x) -> z`` / ``decode(z, quantize=True) -> x`` in [-1, 1]; exposes ``downscale``.
        denoiser: the x0-predicting UNet, ``denoiser(x, timesteps, lq=lq)``; exposes ``size_multiple``.
        diffusion: the schedule and reverse loop.
        noise_predictor: the learned-noise network (None: only ``noise='gaussian'`` is possible).
        defaults: default keyword values of :meth:`forward` (the options file's ``inference:`` block).
    """

    def __init__(self,
                 *,
                 upsampler: nn.Module,
                 autoencoder: nn.Module,
                 denoiser: nn.Module,
                 diffusion: ResShiftDiffusion,
                 noise_predictor: Optional[nn.Module] = None,
                 defaults: Optional[InferenceDefaults] = None):
        super().__init__()
        self.upsampler = upsampler
        self.autoencoder = autoencoder
        self.denoiser = denoiser
        self.noise_predictor = noise_predictor
        self.diffusion = diffusion
        self.defaults = defaults or InferenceDefaults()
        self.scale = self.defaults.scale
        downscale = int(getattr(autoencoder, 'downscale'))
        size_multiple = math.lcm(*(int(getattr(net, 'size_multiple', 1)) for net in (denoiser, noise_predictor)
                                   if net is not None))
        latent_per_lr = self.scale / downscale  # latent pixels per LR pixel (1 for LPNSR: x4 then /4)
        lr_multiple = size_multiple / latent_per_lr
        if lr_multiple != int(lr_multiple) or latent_per_lr != int(latent_per_lr):
            raise ValueError(f'scale {self.scale} and autoencoder downscale {downscale} give a latent of '
                             f'{latent_per_lr} px per LR px; the pipeline needs a whole number')
        self.lr_multiple = int(lr_multiple)
        """LR sizes are padded to a multiple of this (64 for the official models)."""
        self.latent_per_lr = int(latent_per_lr)
        self.latent_channels = int(getattr(autoencoder, 'latent_channels'))
        self.autocast_cache = True
        """Autocast caches weight casts within a call; off under CUDA graphs (:meth:`accelerate`)."""
        self.eval()

    # ---------------------------------------------------------------------------------------------- building
    @classmethod
    def from_options(cls, options: Union[str, Path, Mapping], device: torch.device | str = 'cpu') -> 'LPNSRPipeline':
        """Build from an options file/dict and load the checkpoints it names.

        Expected keys: ``network_upsampler``, ``network_ae``, ``network_unet`` and optionally ``network_noise``
        (BasicSR network blocks with ``type:``); ``path.pretrain_network_{upsampler,ae,unet,noise}`` (a checkpoint
        path, or ``~`` to keep the random initialisation, e.g. for the weight-free bicubic upsampler), with optional
        ``path.param_key_<name>`` and ``path.strict_load_<name>``; ``diffusion:`` (:class:`DiffusionConfig`);
        ``inference:`` (:class:`InferenceDefaults`).
        """
        opt = load_options(options)
        _check_option_names(opt)
        diffusion = ResShiftDiffusion(DiffusionConfig.from_dict(opt.get('diffusion')))
        defaults = InferenceDefaults.from_dict(opt.get('inference'))
        check_checkpoints_exist(opt.get('path'))
        networks = {}
        for name in PIPELINE_NETWORKS:
            block = opt.get(f'network_{name}')
            if block is None:
                if name == 'noise':
                    networks[name] = None
                    continue
                raise KeyError(f'options: the block network_{name} is missing')
            networks[name] = _build_and_load(name, block, opt.get('path') or {})
        pipeline = cls(upsampler=networks['upsampler'],
                       autoencoder=networks['ae'],
                       denoiser=networks['unet'],
                       noise_predictor=networks['noise'],
                       diffusion=diffusion,
                       defaults=defaults)
        return pipeline.to(device)

    # ---------------------------------------------------------------------------------------------- speed
    def compile_targets(self, scope: str) -> List[Tuple[nn.Module, str]]:
        """The ``(owner, attribute)`` pairs that :meth:`accelerate` compiles or captures for ``scope`` (see
        :data:`COMPILE_SCOPES`); networks the pipeline lacks (no noise predictor) are left out."""
        if scope not in COMPILE_SCOPES:
            raise ValueError(f'compile scope must be one of {COMPILE_SCOPES}, got {scope!r}')
        targets = [(self, 'denoiser'), (self, 'noise_predictor')]
        if scope == 'all':
            targets += [(self, 'upsampler')]
            targets += [(self.autoencoder, name) for name in ('encoder', 'decoder')]
        return [(owner, name) for owner, name in targets if getattr(owner, name, None) is not None]

    def accelerate(self, *, channels_last: bool = False, compile_mode: Optional[str] = None,
                   cuda_graphs: bool = False, compile_scope: str = 'diffusion') -> 'LPNSRPipeline':
        """Switch on the optional fast paths (in place; returns ``self``).

        ``channels_last``: NHWC memory format for every network (helps convolutions on GPUs and some CPUs).
        ``compile_mode``: ``torch.compile`` with static shapes (``'default'``, or ``'reduce-overhead'`` for CUDA
        graphs of the Inductor kernels); ``None`` keeps eager mode. ``cuda_graphs``: replay the eager networks from
        CUDA graphs captured per input size (:class:`~lpnsr_arch.acceleration.CapturedGraphs`: no compiler, two
        warm-ups and a capture per size; CUDA only, other devices run eagerly); not together with ``compile_mode``.
        ``compile_scope``: what the two cover: ``'diffusion'``, the denoiser and the noise predictor (the calls
        repeated at every step); ``'all'``, also the pre-upsampler and the autoencoder's encoder and decoder.
        Outputs stay within float tolerance of the eager path (``bench.speed`` reports the difference). Wrapped
        networks carry a prefix in their state-dict keys: save the networks before accelerating, not after.
        """
        targets = self.compile_targets(compile_scope)  # checks the scope before anything changes
        if cuda_graphs and compile_mode is not None:
            raise ValueError(f'cuda_graphs and compile_mode={compile_mode!r} exclude each other: choose one')
        wrapped = [name for owner, name in targets
                   if isinstance(getattr(owner, name), (CapturedGraphs, GraphReplayed, torch._dynamo.OptimizedModule))]
        if (cuda_graphs or compile_mode is not None) and wrapped:
            raise ValueError(f'{wrapped} already compiled or replayed from CUDA graphs: accelerate a fresh pipeline')
        if channels_last:
            self.to(memory_format=torch.channels_last)
        for owner, name in targets:
            module = getattr(owner, name)
            if cuda_graphs:
                setattr(owner, name, CapturedGraphs(module))
            elif compile_mode is not None:
                compiled = torch.compile(module, mode=compile_mode, dynamic=False)
                setattr(owner, name, GraphReplayed(compiled) if compile_mode == 'reduce-overhead' else compiled)
        if cuda_graphs:
            self.autocast_cache = False  # a cast cached outside a capture would be freed under the graph
        return self

    # ---------------------------------------------------------------------------------------------- pieces
    def precision_context(self, device: torch.device, precision: str) -> contextlib.AbstractContextManager:
        """Autocast for the diffusion part (``'fp32'``: none)."""
        if precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {sorted(PRECISIONS)}, got {precision!r}')
        if precision == 'fp32':
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision], cache_enabled=self.autocast_cache)

    def pre_upsample(self, lq: Tensor, *, upsampler_precision: str = 'fp32', self_ensemble: bool = False) -> Tensor:
        """The pre-upsampled LR: (B, 3, h, w) in [-1, 1] -> (B, 3, h*scale, w*scale) in about [-1, 1] (not clamped).

        Runs outside any enclosing autocast, in ``upsampler_precision`` (fp32 as the official code). ``self_ensemble``:
        the mean over the eight flips and quarter turns (:func:`dihedral_self_ensemble`).
        """
        lq01 = (lq.float() + 1) * 0.5
        with torch.autocast(device_type=lq.device.type, enabled=False):
            with self.precision_context(lq.device, upsampler_precision):
                up01 = dihedral_self_ensemble(self.upsampler, lq01) if self_ensemble else self.upsampler(lq01)
        return up01.float() * 2 - 1

    def noise_source(self, noise: str, draws: Callable[[Tensor], Tensor], noise_mode: str = 'sample'):
        """The noise of the intermediate reverse steps: ``'learned'`` (LPNSR) or ``'gaussian'`` (ResShift)."""
        _check_noise_args(noise, noise_mode)
        if noise == 'gaussian':
            return GaussianNoise(draws)
        if self.noise_predictor is None:
            raise ValueError("noise='learned' needs a noise predictor; this pipeline has none (use noise='gaussian')")
        return LearnedNoise(self.noise_predictor, draws, mode=noise_mode)

    def sample_func(self,
                    lq: Tensor,
                    *,
                    draws: Callable[[Tensor], Tensor],
                    noise: str = 'learned',
                    noise_mode: str = 'sample',
                    precision: str = 'fp32',
                    upsampler_precision: str = 'fp32',
                    upsampler_self_ensemble: bool = False) -> Tensor:
        """The official ``sample_func`` on an already padded batch: LR in [-1, 1] -> SR in [-1, 1].

        pre-upsample (fp32) -> ``autoencoder.encode`` -> reverse chain -> ``autoencoder.decode(quantize=True)`` ->
        clamp to [-1, 1]. The draws are consumed in the official order: the prior noise, then the noise predictor's
        draws at t = T-1 .. 1, then one discarded draw for t = 0 (``draw0 .. draw4`` of the conformance vectors).

        Args:
            lq: (B, 3, h, w) in [-1, 1]; h and w multiples of :attr:`lr_multiple`.
            draws: a :class:`NormalDraws` (or any ``draws(like) -> standard normal like like``).
            noise: ``'learned'`` or ``'gaussian'``.
            noise_mode: ``'sample'`` (official) or ``'mean'`` (the predictor's mean: deterministic).
            precision: autocast dtype for encode/chain/decode.
            upsampler_precision: precision of the pre-upsampler.
            upsampler_self_ensemble: average the pre-upsampler over the eight flips and quarter turns.

        Returns:
            (B, 3, h*scale, w*scale) float32 in [-1, 1].
        """
        self._check_lq(lq)
        lr_up = self.pre_upsample(lq, upsampler_precision=upsampler_precision, self_ensemble=upsampler_self_ensemble)
        source = self.noise_source(noise, draws, noise_mode)
        with self.precision_context(lq.device, precision):
            z_y = self.autoencoder.encode(lr_up)
            # the official sampler's discarded t = 0 draw keeps a shared stream in step; position-seeded draws
            # (a noise field's crops) have no stream to keep, so it is not made
            final_draws = None if isinstance(draws, CroppedDraws) else draws
            x0 = self.diffusion.sample(z_y, lq, self.denoiser, source, prior_noise=draws(z_y),
                                       final_draws=final_draws)
            sr = self.autoencoder.decode(x0, quantize=True)
        return sr.float().clamp_(-1.0, 1.0)

    def color_correct(self, sr01: Tensor, lq: Tensor, color_fix: str = 'wavelet') -> Tensor:
        """Colour correction of ``sr01`` (B, 3, H, W) in [0, 1] against bicubic x scale of ``lq`` (B, 3, h, w) in
        [-1, 1]; returns float32 in [0, 1]. Always runs in float32, outside autocast."""
        if color_fix not in COLOR_FIXES:
            raise ValueError(f'color_fix must be one of {COLOR_FIXES}, got {color_fix!r}')
        with torch.autocast(device_type=sr01.device.type, enabled=False):
            sr01 = sr01.float()
            if color_fix == 'none':
                return sr01.clamp(0.0, 1.0)
            reference = bicubic_upscale(lq.float(), self.scale)
            reference01 = reference.mul_(0.5).add_(0.5)
            if color_fix == 'wavelet':
                return wavelet_color_fix(sr01, reference01)
            return adain_color_fix(sr01, reference01)

    def noise_field(self, seed: int, lq: Tensor) -> LatentNoiseField:
        """The noise field of the padded LR batch ``lq`` (B, 3, h, w): latent-shaped, seeded with ``seed``."""
        batch, _, height, width = lq.shape
        shape = (batch, self.latent_channels, height * self.latent_per_lr, width * self.latent_per_lr)
        return LatentNoiseField(seed, shape, lq.device)

    @property
    def draws_per_chain(self) -> int:
        """How many position-seeded draws one chain takes: the prior's, then one per step t = T-1 .. 1."""
        return self.diffusion.num_timesteps

    def latent_box(self, tile: Tile) -> Tuple[slice, slice]:
        """The latent (rows, cols) slices of an LR tile."""
        k = self.latent_per_lr
        return slice(tile.top * k, (tile.top + tile.height) * k), slice(tile.left * k, (tile.left + tile.width) * k)

    # ---------------------------------------------------------------------------------------------- forward
    @torch.no_grad()
    def forward(self,
                lr01: Tensor,
                *,
                seed: Optional[int] = None,
                draws: Optional[Callable[[Tensor], Tensor]] = None,
                noise: Optional[str] = None,
                noise_mode: str = 'sample',
                color_fix: Optional[str] = None,
                tile: Optional[int] = None,
                tile_overlap: Optional[int] = None,
                tile_batch: Optional[int] = None,
                precision: str = 'fp32',
                upsampler_precision: str = 'fp32',
                upsampler_self_ensemble: Optional[bool] = None,
                pad_mode: Optional[str] = None,
                exact_blend: bool = False,
                progress: Optional[Callable[[int, int], None]] = None) -> Tensor:
        """Super-resolve a batch.

        Args:
            lr01: (B, 3, H, W) float in [0, 1].
            seed: the noise seed; ``None`` draws one from torch's global generator. The draws come from a
                :class:`LatentNoiseField` seeded with it (the same noise at each place, tiled or not).
            draws: explicit draws (injected noise); excludes ``seed`` and tiling.
            noise: ``'learned'`` (LPNSR) or ``'gaussian'`` (ResShift); default from :attr:`defaults`.
            noise_mode: ``'sample'`` (official) or ``'mean'`` (deterministic learned noise).
            color_fix: ``'wavelet'`` (official), ``'adain'`` or ``'none'``.
            tile: LR tile size after padding (the official chop size is 256); ``0`` turns tiling off, ``None``
                takes the default. An image whose padded sides are all ``<= tile`` is processed in one piece.
            tile_overlap: LR pixels shared by neighbouring tiles (official 128).
            tile_batch: tiles per network call.
            precision: ``'fp32'``, ``'bf16'`` or ``'fp16'`` autocast for encode, chain and decode.
            upsampler_precision: the pre-upsampler's precision (fp32 as the official code).
            upsampler_self_ensemble: average the pre-upsampler over the eight flips and quarter turns of each
                (padded) LR tile; default from :attr:`defaults` (off in the official pipeline).
            pad_mode: ``'official'`` (multiple, then power of two) or ``'multiple'``.
            exact_blend: blend the tiles in float64 (the official accumulation) rather than float32.
            progress: ``progress(done, total)`` after each batch of tiles.

        Returns:
            (B, 3, H*scale, W*scale) float32 in [0, 1].
        """
        d = self.defaults
        noise = d.noise if noise is None else noise
        color_fix = d.color_fix if color_fix is None else color_fix
        tile, tile_overlap = self.resolve_tiling(tile, tile_overlap)
        tile_batch = d.tile_batch if tile_batch is None else tile_batch
        pad_mode = d.pad_mode if pad_mode is None else pad_mode
        if upsampler_self_ensemble is None:
            upsampler_self_ensemble = d.upsampler_self_ensemble
        elif not isinstance(upsampler_self_ensemble, bool):
            raise ValueError(f'upsampler_self_ensemble must be True, False or None, got {upsampler_self_ensemble!r}')
        _check_noise_args(noise, noise_mode)
        _check_choices(color_fix=(color_fix, COLOR_FIXES), precision=(precision, tuple(PRECISIONS)),
                       upsampler_precision=(upsampler_precision, tuple(PRECISIONS)), pad_mode=(pad_mode, PAD_MODES))
        tile_batch = integer_at_least(tile_batch, 'tile_batch', 1)
        self._check_lr01(lr01)
        height, width = lr01.shape[-2:]
        padded01, _ = pad_lr(lr01.float(), self.lr_multiple, pad_mode)
        lq = padded01 * 2 - 1
        one_piece = not tile or (lq.shape[-2] <= tile and lq.shape[-1] <= tile)
        if draws is not None and not one_piece:
            raise ValueError('injected draws cannot be combined with tiling (pass tile=0)')
        if draws is not None and seed is not None:
            raise ValueError('pass either seed or draws, not both')
        seed = _random_base_seed() if seed is None and draws is None else seed
        run = dict(noise=noise, noise_mode=noise_mode, precision=precision, upsampler_precision=upsampler_precision,
                   upsampler_self_ensemble=upsampler_self_ensemble)
        if one_piece:
            if draws is None:
                draws = CroppedDraws(self.noise_field(seed, lq), [(slice(None), slice(None))],
                                     prepare=self.draws_per_chain)
            sr = self.sample_func(lq, draws=draws, **run)
            if progress is not None:
                progress(1, 1)
        else:
            noise_field = self.noise_field(seed, lq)

            def run_tiles(lq_tiles: Tensor, tiles: Sequence[Tile]) -> Tensor:
                boxes = [self.latent_box(t) for t in tiles]
                draws = CroppedDraws(noise_field, boxes, prepare=self.draws_per_chain)
                return self.sample_func(lq_tiles, draws=draws, **run)

            sr = process_tiled(lq, run_tiles, tile=tile, overlap=tile_overlap, scale=self.scale,
                               tile_batch=tile_batch, exact=exact_blend, progress=progress).float()
        sr01 = sr.mul_(0.5).add_(0.5)  # in place: no second image-sized copy
        if color_fix == 'adain':  # global statistics: those of the visible image, not of the mirrored padding
            sr01, lq = sr01[:, :, :height * self.scale, :width * self.scale], lq[:, :, :height, :width]
        sr01 = self.color_correct(sr01, lq, color_fix)  # wavelet: on the padded image, as the official code
        return sr01[:, :, :height * self.scale, :width * self.scale].contiguous()

    # ---------------------------------------------------------------------------------------------- checks
    def _check_lr01(self, lr01: Tensor) -> None:
        if lr01.ndim != 4 or lr01.shape[1] != 3:
            raise ValueError(f'lr01 must be shaped (B, 3, H, W), got {tuple(lr01.shape)}')
        if not lr01.is_floating_point():
            raise TypeError(f'lr01 must be a float tensor in [0, 1], got {lr01.dtype}')
        low, high = float(lr01.min()), float(lr01.max())  # one host sync per call, before any network
        if low < -1e-3 or high > 1 + 1e-3:
            raise ValueError(f'lr01 must be in [0, 1], got values in [{low:.4g}, {high:.4g}]'
                             + (' (an image in 0..255? divide it by 255)' if high > 2 else ''))

    def _check_lq(self, lq: Tensor) -> None:
        if lq.ndim != 4 or lq.shape[1] != 3:
            raise ValueError(f'lq must be shaped (B, 3, h, w), got {tuple(lq.shape)}')
        bad = [side for side in lq.shape[-2:] if side % self.lr_multiple]
        if bad:
            raise ValueError(f'lq sides {tuple(lq.shape[-2:])} must be multiples of {self.lr_multiple} (pad first)')

    def resolve_tiling(self, tile: Optional[int], tile_overlap: Optional[int]) -> Tuple[int, int]:
        """The LR ``(tile, tile_overlap)`` of a run (``tile`` 0: no tiling): :attr:`defaults` where an argument is
        None; a ``tile`` given without an overlap keeps the default overlap only when it is smaller than the tile,
        else takes a quarter of the tile (the official 256/128 becomes e.g. 128/32). Raises ``ValueError`` for a tile
        the networks cannot take."""
        if tile is None:  # the defaults are a checked pair (InferenceDefaults)
            tile, default_overlap = self.defaults.tile or 0, self.defaults.tile_overlap
        else:
            tile = integer_at_least(tile, 'tile', 0)
            default_overlap = self.defaults.tile_overlap if self.defaults.tile_overlap < tile else tile // 4
        tile_overlap = default_overlap if tile_overlap is None else integer_at_least(tile_overlap, 'tile_overlap', 0)
        if tile:
            self.check_tile(tile, tile_overlap)
        return tile, tile_overlap

    def check_tile(self, tile: int, tile_overlap: int) -> None:
        """Raise ``ValueError`` unless ``tile`` (LR pixels) is a multiple of the network size multiple and
        ``tile_overlap`` is in [0, tile)."""
        if tile % self.lr_multiple:
            raise ValueError(f'tile must be a multiple of {self.lr_multiple}, got {tile}')
        if not 0 <= tile_overlap < tile:
            raise ValueError(f'tile_overlap must be in [0, tile), got {tile_overlap}')


PIPELINE_NETWORKS = ('upsampler', 'ae', 'unet', 'noise')
PIPELINE_BLOCKS = tuple(f'network_{name}' for name in PIPELINE_NETWORKS) + ('path', 'diffusion', 'inference')
PER_NETWORK_PATH_KEYS = ('pretrain_network_', 'param_key_', 'strict_load_')


def _check_noise_args(noise: str, noise_mode: str) -> None:
    """``noise`` and ``noise_mode`` are known, and the mean mode is asked of the learned noise only."""
    _check_choices(noise=(noise, NOISE_KINDS), noise_mode=(noise_mode, NOISE_MODES))
    if noise == 'gaussian' and noise_mode != 'sample':
        raise ValueError(f"noise_mode={noise_mode!r} needs noise='learned' (Gaussian noise has no mean mode)")


def _check_choices(**named: Tuple[object, Sequence[object]]) -> None:
    """Raise ``ValueError`` naming the first argument whose value (``named[name][0]``) is not one of its choices."""
    for name, (value, choices) in named.items():
        if value not in choices:
            raise ValueError(f'{name} must be one of {list(choices)}, got {value!r}')


def _check_option_names(opt: Mapping) -> None:
    """Misspelt names fail instead of silently falling back to defaults: a top-level key that is a near miss of a
    known block (``difusion``), or a per-network ``path`` key that names no network of the pipeline."""
    for key in opt:
        if key not in PIPELINE_BLOCKS:
            close = difflib.get_close_matches(str(key), PIPELINE_BLOCKS, n=1, cutoff=0.8)
            if close:
                raise KeyError(f'options: unknown block {key!r}; did you mean {close[0]!r}?')
    for key in opt.get('path') or {}:
        for prefix in PER_NETWORK_PATH_KEYS:
            if str(key).startswith(prefix) and str(key)[len(prefix):] not in PIPELINE_NETWORKS:
                raise KeyError(f'options: path.{key} names no network of the pipeline; the networks are '
                               f'{list(PIPELINE_NETWORKS)} (e.g. {prefix}unet)')


def _build_and_load(name: str, block: Mapping, path_opt: Mapping) -> nn.Module:
    """Build ``network_<name>`` with BasicSR's ``build_network`` and load ``path.pretrain_network_<name>``."""
    if 'type' not in block:
        raise KeyError(f'options: network_{name} has no "type"')
    registered = sorted(arch_name for arch_name, _ in ARCH_REGISTRY)
    if block['type'] not in registered:  # BasicSR would first print a misleading "use name: <type>_basicsr" line
        close = difflib.get_close_matches(str(block['type']), registered, n=1, cutoff=0.6)
        hint = f'; did you mean {close[0]!r}?' if close else ''
        raise KeyError(f'options: network_{name}.type {block["type"]!r} is not a registered network{hint}')
    try:
        net = build_network(dict(block))
    except TypeError as error:  # a misspelt or unknown argument of the network class
        raise TypeError(f'options: network_{name}: {error}') from error
    if load_network_from_options(net, path_opt, name, log=logger) is None:
        logger.info(f'network_{name} ({block["type"]}): no checkpoint, random/weight-free initialisation')
    return net.eval().requires_grad_(False)
