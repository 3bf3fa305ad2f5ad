"""Speed benchmark of the LPNSR pipeline with random weights (no checkpoint needed).

Cases as in ``/work/shared/anchors``: LR 64 (one piece), LR 256 (one piece), LR 512 (tiled 256/128: 9 tiles).
Paths: the eager fp32 reference and the fast paths (bf16 autocast, channels_last, all tiles in one batch, and on
CUDA ``torch.compile`` of the denoiser/noise predictor and ``torch.compile(mode='reduce-overhead')`` = CUDA graphs).
Each row gives the median time, peak memory (CUDA), FLOPs (``torch.utils.flop_counter`` on one reference run), the
model-FLOP utilisation against ``--peak-tflops`` and the max abs difference from the reference output (same seed).

Example (GPU)::

    python -m lpnsr_arch.bench.speed --preset official --out results/bench_speed
    python -m lpnsr_arch.bench.speed --small --sizes 64 --repeats 1     # CPU smoke run
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from lpnsr_arch.bench.common import Table, report, resolve_device
from lpnsr_arch.bench.presets import preset_options
from lpnsr_arch.pipeline import LPNSRPipeline
from lpnsr_arch.tiling import count_tiles

__all__ = ['SpeedCase', 'SpeedPath', 'default_paths', 'run_case', 'main']

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
    """A way to run the pipeline: autocast precision, memory format, tile batching, compilation."""
    name: str
    precision: str = 'fp32'
    channels_last: bool = False
    batch_all_tiles: bool = False
    compile_mode: Optional[str] = None


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
        ]
    return paths


@contextlib.contextmanager
def applied(pipeline: LPNSRPipeline, path: SpeedPath) -> Iterator[LPNSRPipeline]:
    """``pipeline`` set up for ``path`` (memory format, compiled networks), restored on exit."""
    originals = {'denoiser': pipeline.denoiser, 'noise_predictor': pipeline.noise_predictor}
    if path.channels_last:
        pipeline.to(memory_format=torch.channels_last)
    if path.compile_mode is not None:
        for name, module in originals.items():
            if module is not None:
                setattr(pipeline, name, torch.compile(module, mode=path.compile_mode, dynamic=False))
    try:
        yield pipeline
    finally:
        for name, module in originals.items():
            setattr(pipeline, name, module)
        if path.channels_last:
            pipeline.to(memory_format=torch.contiguous_format)


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_runs(run: Callable[[], Tensor], device: torch.device, *, warmup: int,
              repeats: int) -> tuple[List[float], Tensor]:
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


def count_flops(run: Callable[[], Tensor]) -> int:
    """Total FLOPs of one ``run`` (``torch.utils.flop_counter``)."""
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
    """Rows for one case: every path, timed, with FLOPs, utilisation and the difference from the first path."""
    generator = torch.Generator().manual_seed(seed)
    lr01 = torch.rand((1, 3, case.lr_size, case.lr_size), generator=generator).to(device)
    tiles = 1 if case.tile is None else count_tiles(case.lr_size, case.lr_size, case.tile, case.tile_overlap)
    rows, reference, flops = [], None, None
    for path in paths:
        if path.batch_all_tiles and tiles == 1:
            continue
        tile_batch = tiles if path.batch_all_tiles else 1
        image = lr01.contiguous(memory_format=torch.channels_last) if path.channels_last else lr01

        def run() -> Tensor:
            return pipeline(image, seed=seed, tile=case.tile or 0, tile_overlap=case.tile_overlap,
                            tile_batch=tile_batch, precision=path.precision)

        with applied(pipeline, path):
            if flops is None:
                flops = count_flops(run)
            if device.type == 'cuda':
                torch.cuda.reset_peak_memory_stats(device)
            try:
                times, output = time_runs(run, device, warmup=warmup, repeats=repeats)
            except (RuntimeError, torch.OutOfMemoryError) as error:  # compile/OOM failures are reported, not fatal
                logger.error(f'{case.name} {path.name}: {error}')
                rows.append({'case': case.name, 'path': path.name, 'error': str(error).splitlines()[0]})
                continue
        median = statistics.median(times)
        if reference is None:
            reference = output
        row = {
            'case': case.name, 'path': path.name, 'tiles': tiles, 'tile_batch': tile_batch, 'median_ms': median * 1e3,
            'min_ms': min(times) * 1e3, 'peak_mem_gib': _peak_memory_gib(device), 'gflop': flops / 1e9,
            'tflops_per_s': flops / median / 1e12, 'mfu_pct': (flops / median / 1e12 / peak * 100) if peak else None,
            'max_abs_diff': float((output - reference).abs().max())
        }
        rows.append(row)
    return rows


def _peak_memory_gib(device: torch.device) -> Optional[float]:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description='LPNSR pipeline speed (random weights).')
    parser.add_argument('--preset', choices=('official', 'small', 'tiny'), default='official')
    parser.add_argument('--small', action='store_true', help='shorthand for --preset small (CPU runs)')
    parser.add_argument('--sizes', type=int, nargs='+', default=[64, 256, 512], help='LR sizes (square)')
    parser.add_argument('--tile', type=int, default=256, help='LR tile for sizes above it (official 256)')
    parser.add_argument('--tile-overlap', type=int, default=128)
    parser.add_argument('--paths', nargs='+', default=None, help='subset of path names (default: all for the device)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--peak-tflops', type=float, default=0.0, help='chip peak for MFU (0: from the device name)')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--out', type=Path, default=None, help='folder for speed.csv / speed.json')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Table:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    device = resolve_device(args.device)
    preset = 'small' if args.small else args.preset
    torch.manual_seed(0)
    pipeline = LPNSRPipeline.from_options(preset_options(preset), device)
    paths = default_paths(device)
    if args.paths:
        unknown = sorted(set(args.paths) - {p.name for p in paths})
        if unknown:
            raise SystemExit(f'unknown --paths {unknown}; available on {device}: {[p.name for p in paths]}')
        paths = [p for p in paths if p.name in args.paths or p.name == 'eager_fp32']
    peak = peak_tflops(device, args.peak_tflops)
    device_name = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'
    table = Table(title=f'speed: preset {preset}, {device_name}, torch {torch.__version__}',
                  notes=[f'MFU against {peak} TFLOP/s dense bf16' if peak else 'MFU: no peak known for this device',
                         'max_abs_diff: against eager_fp32, same seed, output in [0, 1]'])
    for case in default_cases(args.sizes, args.tile, args.tile_overlap):
        logger.info(f'case {case.name}')
        table.rows.extend(run_case(pipeline, case, paths, device=device, warmup=args.warmup, repeats=args.repeats,
                                   peak=peak))
    report(table, args.out, 'speed', meta={**vars(args), 'device': device_name})
    return table


if __name__ == '__main__':
    main()
