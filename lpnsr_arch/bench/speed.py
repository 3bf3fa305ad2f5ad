"""Speed benchmark of LPNSR with random weights (no checkpoint needed): inference and the training step.

Inference (``--infer``, table ``speed``), cases as in ``/work/shared/anchors``: LR 64 (one piece), LR 256 (one
piece), LR 512 (tiled 256/128: 9 tiles). Paths: the eager fp32 reference and the fast paths (bf16 autocast,
channels_last, all tiles in one batch; on CUDA, CUDA graphs captured from the eager networks and
``torch.compile``, with or without its CUDA graphs (``reduce-overhead``), of the denoiser/noise predictor or of every
network). Each row gives the median time, peak memory (CUDA), FLOPs (``torch.utils.flop_counter`` on one reference
run), the model-FLOP utilisation against ``--peak-tflops`` and the max abs difference from the reference output
(same seed).

Training (``--train``, table ``speed_train``): one step of the LPNSR noise-predictor stage, run by
:meth:`LPNSRModel.optimize_parameters` itself (the model is built from an options dict with no datasets and no
checkpoints): the unrolled 4-step chain with :class:`~lpnsr_arch.diffusion.LearnedNoise` through the frozen denoiser
and autoencoder, quantised decode, L1, backward, gradient clipping and the AdamW step. The anchor is batch 8, HR 256,
AMP fp16 with GradScaler and checkpointing (path ``fp16_ckpt``). Paths vary ``train.amp`` (none/bf16/fp16),
``network_g.use_checkpoint`` and AdamW's ``foreach``/``fused`` implementation; each row gives the median ms per step,
peak memory (CUDA), FLOPs of one step (forward + backward), the model-FLOP utilisation, the first step's ``l_pix`` and
the max abs difference of the updated noise-predictor parameters from the eager fp32 step (same seed, same batch).

Example (GPU)::

    python -m lpnsr_arch.bench.speed --preset official --out results/bench_speed
    python -m lpnsr_arch.bench.speed --preset official --no-infer --train-paths fp16_ckpt bf16_ckpt_fused
    python -m lpnsr_arch.bench.speed --small --sizes 64 --repeats 1 --train-batch 1    # CPU smoke run

The arguments (path names, tile sizes, the training HR size) are checked before anything is timed: a mistake ends
the run with one ``ERROR`` line naming the option, and exit status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from lpnsr_arch.bench.common import Table, add_run_arguments, parse_run_arguments, report, run_output_folder
from lpnsr_arch.bench.presets import preset_options
from lpnsr_arch.cli_errors import ArgumentParser, non_negative_int, positive_int, user_errors
from lpnsr_arch.models.diffusion_base_model import AMP_DTYPES
from lpnsr_arch.models.lpnsr_model import LPNSRModel
from lpnsr_arch.pipeline import LPNSRPipeline, lr_size_multiple
from lpnsr_arch.tiling import count_tiles

__all__ = [
    'SpeedCase', 'SpeedPath', 'default_paths', 'run_case', 'TrainPath', 'default_train_paths', 'training_options',
    'build_training_model', 'run_training', 'main'
]

Result = TypeVar('Result')

logger = logging.getLogger('lpnsr_arch.bench')

PEAK_TFLOPS = {'H100': 989.0, 'H200': 989.0, 'A100': 312.0}
"""Dense bf16 tensor-core peaks (vendor figures) used for the model-FLOP utilisation when ``--peak-tflops`` is 0."""


@dataclass(frozen=True)
class SpeedCase:
    """An input size; ``tile`` None means one piece."""
    name: str
    lr_size: int
    tile: Optional[int] = None
    tile_overlap: int = 128


@dataclass(frozen=True)
class SpeedPath:
    """A way to run the pipeline: autocast precision (of the diffusion part and of the pre-upsampler), memory
    format, tile batching, compilation (mode and scope, as :meth:`LPNSRPipeline.accelerate`)."""
    name: str
    precision: str = 'fp32'
    upsampler_precision: str = 'fp32'
    channels_last: bool = False
    batch_all_tiles: bool = False
    compile_mode: Optional[str] = None
    cuda_graphs: bool = False
    compile_scope: str = 'diffusion'


def default_cases(sizes: Sequence[int], tile: int, overlap: int) -> List[SpeedCase]:
    """LR sizes up to ``tile`` run in one piece; larger ones are tiled (the official chopping rule)."""
    return [
        SpeedCase(f'lr{size}' + ('_tiled' if size > tile else ''), size, tile if size > tile else None, overlap)
        for size in sizes
    ]


def default_paths(device: torch.device) -> List[SpeedPath]:
    """The reference and the fast paths that make sense on ``device``."""
    paths = [
        SpeedPath('eager_fp32'),
        SpeedPath('bf16', precision='bf16'),
        SpeedPath('bf16_channels_last', precision='bf16', channels_last=True),
        SpeedPath('bf16_tile_batch', precision='bf16', batch_all_tiles=True),
    ]
    if device.type == 'cuda':
        paths += [
            SpeedPath('bf16_compile', precision='bf16', batch_all_tiles=True, compile_mode='default'),
            SpeedPath('bf16_cudagraphs', precision='bf16', batch_all_tiles=True, compile_mode='reduce-overhead'),
            SpeedPath('all_bf16_cudagraphs', precision='bf16', upsampler_precision='bf16', batch_all_tiles=True,
                      compile_mode='reduce-overhead', compile_scope='all'),
            SpeedPath('bf16_graphs', precision='bf16', batch_all_tiles=True, cuda_graphs=True, compile_scope='all'),
            SpeedPath('all_bf16_graphs', precision='bf16', upsampler_precision='bf16', batch_all_tiles=True,
                      cuda_graphs=True, compile_scope='all'),
        ]
    return paths


@contextlib.contextmanager
def applied(pipeline: LPNSRPipeline, path: SpeedPath) -> Iterator[LPNSRPipeline]:
    """``pipeline`` set up for ``path`` (memory format, compiled networks), restored on exit."""
    originals = [(owner, name, getattr(owner, name)) for owner, name in pipeline.compile_targets('all')]
    autocast_cache = pipeline.autocast_cache
    try:
        pipeline.accelerate(channels_last=path.channels_last, compile_mode=path.compile_mode,
                            cuda_graphs=path.cuda_graphs, compile_scope=path.compile_scope)
        yield pipeline
    finally:
        for owner, name, module in originals:
            setattr(owner, name, module)
        pipeline.autocast_cache = autocast_cache
        if path.channels_last:
            pipeline.to(memory_format=torch.contiguous_format)


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_runs(run: Callable[[], Result], device: torch.device, *, warmup: int,
              repeats: int) -> Tuple[List[float], Result]:
    """Wall-clock seconds of ``repeats`` runs after ``warmup`` runs; returns the times and the last output."""
    output = None
    for _ in range(warmup):
        output = run()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        started = time.perf_counter()
        output = run()
        _synchronize(device)
        times.append(time.perf_counter() - started)
    return times, output


def _register_cpu_attention_flops() -> None:
    """Give PyTorch's fused CPU attention kernels the FLOP formulas of the other SDPA kernels (``flop_counter`` has
    none for them and would count the attention of a CPU run as 0 FLOPs; the CUDA kernels are registered)."""
    from torch.utils import flop_counter
    forward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
    if forward in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(forward)
    def forward_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    @flop_counter.register_flop_formula(backward)
    def backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def count_flops(run: Callable[[], object]) -> int:
    """Total FLOPs of one ``run`` (``torch.utils.flop_counter``; attention counted on every device)."""
    _register_cpu_attention_flops()
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return int(counter.get_total_flops())


def peak_tflops(device: torch.device, override: float) -> Optional[float]:
    """The peak used for the utilisation: ``override`` if > 0, else the table entry for the CUDA device name."""
    if override > 0:
        return override
    if device.type != 'cuda':
        return None
    name = torch.cuda.get_device_name(device)
    return next((value for key, value in PEAK_TFLOPS.items() if key in name), None)


def run_case(pipeline: LPNSRPipeline, case: SpeedCase, paths: Sequence[SpeedPath], *, device: torch.device,
             warmup: int, repeats: int, peak: Optional[float], seed: int = 0) -> List[Dict[str, object]]:
    """Rows for one case: every path, timed, with FLOPs, utilisation and the difference from the first path (the
    reference: when it fails, the other rows carry no difference rather than one against another path)."""
    generator = torch.Generator().manual_seed(seed)
    lr01 = torch.rand((1, 3, case.lr_size, case.lr_size), generator=generator).to(device)
    tiles = 1 if case.tile is None else count_tiles(case.lr_size, case.lr_size, case.tile, case.tile_overlap)
    rows, reference, flops = [], None, None
    reference_failed = False  # the first path that ran failed: no difference is reported
    for path in paths:
        if path.batch_all_tiles and tiles == 1 and path.compile_mode is None and not path.cuda_graphs:
            continue  # the same run as the path without tile batching
        tile_batch = tiles if path.batch_all_tiles else 1
        image = lr01.contiguous(memory_format=torch.channels_last) if path.channels_last else lr01

        def run() -> Tensor:
            return pipeline(image, seed=seed, tile=case.tile or 0, tile_overlap=case.tile_overlap,
                            tile_batch=tile_batch, precision=path.precision,
                            upsampler_precision=path.upsampler_precision)

        with applied(pipeline, path):
            _reset_peak_memory(device)
            try:
                if flops is None:
                    flops = count_flops(run)
                times, output = time_runs(run, device, warmup=warmup, repeats=repeats)
            except (RuntimeError, torch.OutOfMemoryError) as error:  # compile/OOM failures are reported, not fatal
                logger.error(f'{case.name} {path.name}: {error}')
                rows.append({'case': case.name, 'path': path.name, 'error': str(error).splitlines()[0]})
                reference_failed = reference_failed or reference is None
                continue
        median = statistics.median(times)
        if reference is None and not reference_failed:
            reference = output
        row = {
            'case': case.name, 'path': path.name, 'tiles': tiles, 'tile_batch': tile_batch, 'median_ms': median * 1e3,
            'min_ms': min(times) * 1e3, 'peak_mem_gib': _peak_memory_gib(device), 'gflop': flops / 1e9,
            'tflops_per_s': flops / median / 1e12, 'mfu_pct': (flops / median / 1e12 / peak * 100) if peak else None,
            'max_abs_diff': None if reference_failed else float((output - reference).abs().max())
        }
        logger.info(f'row {row}')  # in the log as soon as measured: a run stopped later keeps it
        rows.append(row)
    return rows


def _peak_memory_gib(device: torch.device) -> float:
    """Peak allocated CUDA memory since the last reset, GiB; NaN (printed 'n/a') on other devices."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else math.nan


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)


# --------------------------------------------------------------------------------------------------------------
# The training step of the noise-predictor stage (LPNSRModel.optimize_parameters)
# --------------------------------------------------------------------------------------------------------------
AMP_MODES = tuple(AMP_DTYPES)
ADAMW_IMPLEMENTATIONS = ('foreach', 'fused')
OFFICIAL_TRAIN_LR = 5e-5
"""``train.optim_g.lr`` of ``options/train_lpnsr_x4.yml`` (the official recipe)."""
OFFICIAL_GRAD_CLIP = 1.0


@dataclass(frozen=True)
class TrainPath:
    """A way to run the training step: ``train.amp``, ``network_g.use_checkpoint``, AdamW ``foreach`` or ``fused``."""
    name: str
    amp: str = 'none'
    checkpoint: bool = False
    adamw: str = 'foreach'

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f'TrainPath {self.name!r}: amp must be one of {AMP_MODES}, got {self.amp!r}')
        if self.adamw not in ADAMW_IMPLEMENTATIONS:
            raise ValueError(f'TrainPath {self.name!r}: adamw must be one of {ADAMW_IMPLEMENTATIONS}, '
                             f'got {self.adamw!r}')


REFERENCE_TRAIN_PATH = TrainPath('eager_fp32')


def default_train_paths() -> List[TrainPath]:
    """The eager fp32 reference, then AMP, checkpointing and fused AdamW; ``fp16_ckpt`` is the official setting.

    Fused AdamW is tried on every device: where ``torch.optim.AdamW(fused=True)`` is not supported the row reports
    the error.
    """
    return [
        REFERENCE_TRAIN_PATH,
        TrainPath('fp32_ckpt', checkpoint=True),
        TrainPath('bf16', amp='bf16'),
        TrainPath('bf16_ckpt', amp='bf16', checkpoint=True),
        TrainPath('fp16', amp='fp16'),
        TrainPath('fp16_ckpt', amp='fp16', checkpoint=True),
        TrainPath('fp16_ckpt_fused', amp='fp16', checkpoint=True, adamw='fused'),
        TrainPath('bf16_ckpt_fused', amp='bf16', checkpoint=True, adamw='fused'),
    ]


def training_options(preset: Mapping, path: TrainPath, *, device: torch.device, lr: float = OFFICIAL_TRAIN_LR,
                     grad_clip: float = OFFICIAL_GRAD_CLIP) -> Dict:
    """An :class:`~lpnsr_arch.models.lpnsr_model.LPNSRModel` options dict for one training path.

    The networks come from a benchmark preset (``network_noise`` becomes the trained ``network_g``); as in the
    official training recipe (``options/train_lpnsr_x4.yml``) the pre-upsampler is bicubic, the loss is L1 only
    (``l_pix``), the gradient is clipped and the learning rate is constant. No datasets, no checkpoints (random
    weights), no EMA, no discriminator.
    """
    missing = [key for key in ('network_noise', 'network_unet', 'network_ae', 'diffusion') if not preset.get(key)]
    if missing:
        raise KeyError(f'preset {preset.get("name", "?")!r}: the training benchmark needs {missing}')
    scale = int((preset.get('inference') or {}).get('scale', preset.get('scale', 4)))
    return {
        'name': f'{preset.get("name", "preset")}_train_{path.name}',
        'model_type': 'LPNSRModel',
        'scale': scale,
        'num_gpu': 1 if device.type == 'cuda' else 0,
        'is_train': True,
        'dist': False,
        'rank': 0,
        'world_size': 1,
        'diffusion': dict(preset['diffusion']),
        'network_g': dict(preset['network_noise'], use_checkpoint=path.checkpoint),
        'network_unet': dict(preset['network_unet']),
        'network_ae': dict(preset['network_ae']),
        'network_upsampler': {'type': 'LPNSRBicubicUpsampler', 'scale': scale},
        'path': {'ignore_resume_networks': ['network_ae', 'network_upsampler', 'network_unet']},
        'train': {
            'amp': path.amp,
            'grad_accum': 1,
            'grad_clip': grad_clip,
            'ema_decay': 0,
            'optim_g': {'type': 'AdamW', 'lr': lr, 'weight_decay': 0, 'betas': [0.9, 0.999], path.adamw: True},
            'scheduler': {'type': 'WarmupCosineLR', 'warmup_iter': 0, 'total_iter': 1, 'eta_min': lr},
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
        },
        'val': {'seed': 0},
    }


@contextlib.contextmanager
def _quiet_basicsr_logger() -> Iterator[None]:
    """Silence BasicSR's logger below ERROR (network dumps, 'random initialisation' warnings) for the block."""
    basicsr_logger = logging.getLogger('basicsr')
    level = basicsr_logger.level
    basicsr_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        basicsr_logger.setLevel(level)


def build_training_model(preset: Mapping, path: TrainPath, *, device: torch.device, seed: int,
                         lr: float = OFFICIAL_TRAIN_LR) -> LPNSRModel:
    """An ``LPNSRModel`` for ``path``; the random weights depend only on ``seed`` (the same for every path)."""
    torch.manual_seed(seed)
    with _quiet_basicsr_logger():
        return LPNSRModel(training_options(preset, path, device=device, lr=lr))


def training_batch(*, batch_size: int, hr_size: int, scale: int, seed: int) -> Dict[str, Tensor]:
    """A fixed random batch: ``gt`` (B, 3, hr, hr) smooth noise in [0, 1] and ``lq`` its area x1/scale, on CPU."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((batch_size, 3, max(1, hr_size // 8), max(1, hr_size // 8)), generator=generator)
    gt = F.interpolate(coarse, size=(hr_size, hr_size), mode='bilinear', align_corners=False).clamp(0, 1)
    lq = F.interpolate(gt, scale_factor=1 / scale, mode='area')
    return {'lq': lq, 'gt': gt}


def training_hr_multiple(model: LPNSRModel) -> int:
    """The HR sides the model's networks accept in training are multiples of this (training does not pad, unlike
    inference)."""
    latent_multiple = math.lcm(int(model.net_unet.size_multiple), int(model.get_bare_model(model.net_g).size_multiple))
    return model.scale * lr_size_multiple(model.scale, int(model.net_ae.downscale), latent_multiple)


def check_training_size(hr_multiple: int, hr_size: int) -> None:
    """Raise a ``ValueError`` naming ``--train-hr`` unless ``hr_size`` is a multiple of ``hr_multiple``
    (:func:`training_hr_multiple`)."""
    if hr_size % hr_multiple:
        raise ValueError(f'--train-hr {hr_size}: the HR side must be a multiple of {hr_multiple} for these networks')


def preset_training_hr_multiple(preset: Mapping, *, device: torch.device) -> int:
    """:func:`training_hr_multiple` of a model built for that alone (and released), so that ``main`` can refuse a
    ``--train-hr`` before anything is timed."""
    model = build_training_model(preset, REFERENCE_TRAIN_PATH, device=device, seed=0)
    try:
        return training_hr_multiple(model)
    finally:
        model = None  # drop the reference before freeing memory
        _release(device)


def noise_predictor_parameters(model: LPNSRModel) -> List[Tensor]:
    """Detached float32 CPU copies of the trained network's parameters."""
    return [p.detach().float().cpu().clone() for p in model.get_bare_model(model.net_g).parameters()]


def max_abs_difference(first: Sequence[Tensor], second: Sequence[Tensor]) -> float:
    """Max abs element-wise difference over two equally shaped parameter lists."""
    if len(first) != len(second):
        raise ValueError(f'parameter lists differ in length: {len(first)} vs {len(second)}')
    return max(float((a - b).abs().max()) for a, b in zip(first, second))


def relative_update_difference(updated: Sequence[Tensor], reference: 'TrainReference') -> float:
    """``||delta - delta_ref|| / ||delta_ref||`` (L2 over all parameters) of the first step's parameter update
    ``delta`` against the reference's: 0 for the same update, about 2 for an update of the opposite sign."""
    deltas = [(new - old, ref - old) for new, ref, old in zip(updated, reference.updated, reference.initial)]
    difference = math.sqrt(sum(float((delta - ref).square().sum()) for delta, ref in deltas))
    norm = math.sqrt(sum(float(ref.square().sum()) for _, ref in deltas))
    return difference / norm if norm > 0 else math.nan


def seeded_first_step(model: LPNSRModel, batch: Mapping[str, Tensor], seed: int) -> float:
    """Feed ``batch`` and run iteration 1 with the global RNG seeded (the chain's draws are then the same on every
    path); returns its ``l_pix``."""
    model.feed_data(dict(batch))
    torch.manual_seed(seed)
    model.optimize_parameters(1)
    return float(model.log_dict.get('l_pix', math.nan))


@dataclass
class TrainReference:
    """The eager fp32 step the paths are compared with: initial and updated parameters, FLOPs of one step."""
    initial: List[Tensor]
    updated: List[Tensor]
    flops: int
    path: TrainPath


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def train_reference(preset: Mapping, batch: Mapping[str, Tensor], *, device: torch.device, seed: int, hr_size: int,
                    lr: float) -> Optional[TrainReference]:
    """Run the eager fp32 step once from the seeded weights; ``None`` when it does not fit on the device.

    When the plain step does not fit, the step with checkpointing (the same arithmetic, recomputed) is used; its FLOPs
    then include the recomputation.
    """
    for path in (REFERENCE_TRAIN_PATH, TrainPath('eager_fp32_ckpt', checkpoint=True)):
        model = None
        try:
            model = build_training_model(preset, path, device=device, seed=seed, lr=lr)
            check_training_size(training_hr_multiple(model), hr_size)
            initial = noise_predictor_parameters(model)
            seeded_first_step(model, batch, seed)
            updated = noise_predictor_parameters(model)
            flops = count_flops(lambda: model.optimize_parameters(2))
            return TrainReference(initial=initial, updated=updated, flops=flops, path=path)
        except torch.OutOfMemoryError as error:
            logger.error(f'training reference {path.name}: {str(error).splitlines()[0]}')
        finally:
            model = None  # drop the reference before freeing memory
            _release(device)
    return None


def run_train_path(preset: Mapping, path: TrainPath, batch: Mapping[str, Tensor], reference: Optional[TrainReference],
                   *, device: torch.device, warmup: int, repeats: int, peak: Optional[float], seed: int,
                   lr: float) -> Dict[str, object]:
    """One row: the seeded first step (parameters compared with ``reference``), ``warmup`` steps, ``repeats`` timed
    steps (median ms, peak memory over the timed steps)."""
    row: Dict[str, object] = {'path': path.name, 'amp': path.amp, 'checkpoint': path.checkpoint, 'adamw': path.adamw}
    model = None
    try:
        model = build_training_model(preset, path, device=device, seed=seed, lr=lr)
        first_loss = seeded_first_step(model, batch, seed)
        updated = noise_predictor_parameters(model)
        iteration = iter(range(2, 2 + warmup + repeats))
        _reset_peak_memory(device)
        times, _ = time_runs(lambda: model.optimize_parameters(next(iteration)), device, warmup=warmup,
                             repeats=repeats)
    except (RuntimeError, torch.OutOfMemoryError) as error:  # OOM, unsupported fused AdamW: reported, not fatal
        logger.error(f'train {path.name}: {error}')
        return {**row, 'error': str(error).splitlines()[0]}
    finally:
        model = None  # drop the reference before freeing memory
        _release(device)
    median = statistics.median(times)
    flops = reference.flops if reference else None
    return {
        **row, 'median_ms': median * 1e3, 'min_ms': min(times) * 1e3, 'peak_mem_gib': _peak_memory_gib(device),
        'gflop': flops / 1e9 if flops else None, 'tflops_per_s': flops / median / 1e12 if flops else None,
        'mfu_pct': flops / median / 1e12 / peak * 100 if flops and peak else None, 'l_pix': first_loss,
        'updated': max_abs_difference(updated, reference.initial) > 0 if reference else None,
        'max_abs_param_diff': max_abs_difference(updated, reference.updated) if reference else None,
        'update_rel_diff': relative_update_difference(updated, reference) if reference else None
    }


def run_training(preset: Mapping, paths: Sequence[TrainPath], *, batch_size: int, hr_size: int,
                 device: torch.device, warmup: int, repeats: int, peak: Optional[float], seed: int = 0,
                 lr: float = OFFICIAL_TRAIN_LR) -> Table:
    """The training table: the eager fp32 reference step, then every path (see the module docstring)."""
    scale = int((preset.get('inference') or {}).get('scale', preset.get('scale', 4)))
    batch = training_batch(batch_size=batch_size, hr_size=hr_size, scale=scale, seed=seed)
    reference = train_reference(preset, batch, device=device, seed=seed, hr_size=hr_size, lr=lr)
    case = f'train_b{batch_size}_hr{hr_size}'
    table = Table(title=f'train step of the noise predictor: preset {preset.get("name")}, batch {batch_size}, '
                  f'HR {hr_size}, lr {lr:g}')
    for path in paths:
        logger.info(f'{case} {path.name}')
        row = {'case': case, **run_train_path(preset, path, batch, reference, device=device, warmup=warmup,
                                              repeats=repeats, peak=peak, seed=seed, lr=lr)}
        logger.info(f'row {row}')  # in the log as soon as measured: a run stopped later keeps it
        table.rows.append(row)
    table.notes += [
        'one LPNSRModel.optimize_parameters step: 4-step chain with LearnedNoise through the frozen denoiser and '
        'autoencoder, quantised decode, L1, backward, grad clip 1.0, AdamW; bicubic pre-upsampler (official '
        'training); random weights; no EMA, no GAN',
        'gflop: FlopCounterMode over one step (forward + backward) of ' +
        (f'{reference.path.name}' + (' (includes the recomputation)' if reference.path.checkpoint else '')
         if reference else 'nothing (the reference step failed)'),
        'max_abs_param_diff: noise-predictor parameters after the first step vs the reference eager fp32 step (same '
        'seed, same batch; eager_fp32 itself: a second run, i.e. determinism). AdamW\'s first step moves each '
        'weight by at most about lr, so values stay below about 2*lr; updated: the first step changed the weights '
        '(False: e.g. skipped by the GradScaler)',
        'update_rel_diff: L2 norm of (update - reference update) / L2 norm of the reference update (AdamW\'s first '
        'update is about -lr * sign(grad), so this measures how many gradient signs the path flips)',
    ]
    if device.type == 'cuda':
        table.notes.append(f'fp32 on CUDA: cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, '
                           f'matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}')
    return table


def select_by_name(available: Sequence[Result], names: Optional[Sequence[str]], *, option: str,
                   keep: str) -> List[Result]:
    """The entries of ``available`` named in ``names`` (all when ``names`` is empty), always with ``keep``;
    ``ValueError`` naming ``option`` for an unknown name."""
    if not names:
        return list(available)
    known = [entry.name for entry in available]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f'unknown {option} {unknown}; available here: {known}')
    return [entry for entry in available if entry.name in names or entry.name == keep]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = ArgumentParser(description='LPNSR inference and training-step speed (random weights).')
    parser.add_argument('--preset', choices=('official', 'small', 'tiny'), default='official')
    parser.add_argument('--small', action='store_true', help='shorthand for --preset small (CPU runs)')
    parser.add_argument('--infer', action=argparse.BooleanOptionalAction, default=True,
                        help='run the inference cases (table speed)')
    parser.add_argument('--train', action=argparse.BooleanOptionalAction, default=True,
                        help='run the training step of the noise predictor (table speed_train)')
    parser.add_argument('--sizes', type=positive_int, nargs='+', default=[64, 256, 512], help='LR sizes (square)')
    parser.add_argument('--tile', type=positive_int, default=256, help='LR tile for sizes above it (official 256)')
    parser.add_argument('--tile-overlap', type=non_negative_int, default=128, help='smaller than --tile')
    parser.add_argument('--paths', nargs='+', default=None, help='subset of path names (default: all for the device)')
    parser.add_argument('--train-paths', nargs='+', default=None,
                        help='subset of training path names (default: all; eager_fp32 is always run)')
    parser.add_argument('--train-batch', type=positive_int, default=8, help='training batch size (official 8)')
    parser.add_argument('--train-hr', type=positive_int, default=256, help='training HR crop side (official 256)')
    parser.add_argument('--train-lr', type=float, default=OFFICIAL_TRAIN_LR, help='AdamW learning rate')
    parser.add_argument('--warmup', type=non_negative_int, default=1)
    parser.add_argument('--repeats', type=positive_int, default=3)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--peak-tflops', type=float, default=0.0, help='chip peak for MFU (0: from the device name)')
    add_run_arguments(parser, out_help='folder for speed[_train].csv / .json', tile=False, precision=False)
    return parser


def _mfu_note(peak: Optional[float]) -> str:
    return f'MFU against {peak} TFLOP/s dense bf16' if peak else 'MFU: no peak known for this device'


def check_case_tiles(pipeline: LPNSRPipeline, args: argparse.Namespace) -> None:
    """``ValueError`` naming ``--tile`` / ``--tile-overlap`` when a case is tiled and the tile does not fit the
    pipeline's networks."""
    if any(size > args.tile for size in args.sizes):
        try:
            pipeline.check_tile(args.tile, args.tile_overlap)
        except ValueError as error:
            raise ValueError(f'--tile {args.tile} --tile-overlap {args.tile_overlap}: {error}') from error


def select_paths(args: argparse.Namespace, device: torch.device) -> Tuple[List[SpeedPath], List[TrainPath]]:
    """The inference and training paths to run; ``ValueError`` for nothing to run or an unknown path name."""
    if not (args.infer or args.train):
        raise ValueError('nothing to run: --no-infer and --no-train')
    paths = select_by_name(default_paths(device), args.paths, option='--paths', keep='eager_fp32')
    train_paths = select_by_name(default_train_paths(), args.train_paths, option='--train-paths',
                                 keep=REFERENCE_TRAIN_PATH.name)
    return paths, train_paths


def run_inference(pipeline: LPNSRPipeline, paths: Sequence[SpeedPath], preset: str, args: argparse.Namespace,
                  device: torch.device, peak: Optional[float], device_name: str) -> Table:
    """The inference table (see the module docstring)."""
    table = Table(title=f'speed: preset {preset}, {device_name}, torch {torch.__version__}',
                  notes=[_mfu_note(peak), 'max_abs_diff: against eager_fp32, same seed, output in [0, 1]'])
    for case in default_cases(args.sizes, args.tile, args.tile_overlap):
        logger.info(f'case {case.name}')
        table.rows.extend(run_case(pipeline, case, paths, device=device, warmup=args.warmup, repeats=args.repeats,
                                   peak=peak, seed=args.seed))
    return table


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Table]:
    """Run the selected benchmarks; returns their tables by report stem (``speed``, ``speed_train``). A user
    mistake is one ERROR line and ``SystemExit(2)`` before anything is timed."""
    args, device = parse_run_arguments(build_parser(), argv)
    preset = 'small' if args.small else args.preset
    with user_errors(logger, types=(ValueError, )):
        paths, train_paths = select_paths(args, device)
    if args.train:
        hr_multiple = preset_training_hr_multiple(preset_options(preset), device=device)
        with user_errors(logger, types=(ValueError, )):
            check_training_size(hr_multiple, args.train_hr)
    if args.infer:
        torch.manual_seed(args.seed)
        pipeline = LPNSRPipeline.from_options(preset_options(preset), device)
        with user_errors(logger, types=(ValueError, )):
            check_case_tiles(pipeline, args)
    with run_output_folder(args):  # made now; removed again if the run is refused before writing
        peak = peak_tflops(device, args.peak_tflops)
        device_name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'
        meta = {**vars(args), 'device': device_name, 'torch': torch.__version__}
        tables: Dict[str, Table] = {}
        if args.infer:
            tables['speed'] = run_inference(pipeline, paths, preset, args, device, peak, device_name)
            pipeline = None  # free its memory before the training step is measured
            _release(device)
        if args.train:
            table = run_training(preset_options(preset), train_paths, batch_size=args.train_batch,
                                 hr_size=args.train_hr, device=device, warmup=args.warmup, repeats=args.repeats,
                                 peak=peak, seed=args.seed, lr=args.train_lr)
            table.title += f', {device_name}, torch {torch.__version__}'
            table.notes.insert(0, _mfu_note(peak))
            tables['speed_train'] = table
        for stem, table in tables.items():
            report(table, args.out, stem, meta=meta)
    return tables


if __name__ == '__main__':
    main()
