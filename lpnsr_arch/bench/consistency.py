"""Run-to-run consistency: N seeds per image, learned vs Gaussian noise on the same denoiser.

For every LPNSR pipeline and noise kind, each image is super-resolved with ``--seeds`` seeds. Reported per
(pipeline, noise, dataset), averaged over images:

* ``pixel_std``: the per-pixel standard deviation across seeds (8-bit levels), averaged over pixels: how much the
  output changes from run to run (LPNSR's claim: less than with Gaussian noise). Every std here is the population
  std over the N seeds (ddof 0): with few seeds it reads low (by sqrt((N-1)/N), 0.87 at N = 4) but the same for both
  noise kinds, so compare rows made with the same ``--seeds``;
* ``<metric>_mean`` / ``<metric>_std``: the mean and standard deviation across seeds of PSNR-Y, SSIM-Y (with GT)
  and NIQE (images of >= 96 px after the crop).

Example::

    python -m lpnsr_arch.bench.consistency --pipeline options/inference_lpnsr_official.yml --seeds 5 \
        --dataset val=/data/val_realesrgan_x4/gt,/data/val_realesrgan_x4/lq --limit 8 --out results/consistency

Every dataset is read and every pipeline's options file checked before the first pipeline runs: a user mistake ends
the run with one ``ERROR`` line naming the argument and the file, and exit status 2.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from lpnsr_arch.bench.common import (Table, add_run_arguments, finite_mean, finite_std, load_datasets, niqe_y,
                                     open_lpnsr, parse_methods, parse_run_arguments, psnr_ssim_y, read_gt, report,
                                     run_output_folder, to_bgr255)
from lpnsr_arch.cli_errors import ArgumentParser, int_at_least, non_negative_int, positive_int
from lpnsr_arch.imageio import read_image
from lpnsr_arch.pipeline import NOISE_KINDS, LPNSRPipeline

__all__ = ['image_consistency', 'main']

logger = logging.getLogger('lpnsr_arch.bench')

METRICS = ('psnr_y', 'ssim_y', 'niqe')


def image_consistency(pipeline: LPNSRPipeline, pair, *, noise: str, seeds: Sequence[int], crop_border: int,
                      tile: Optional[int], precision: str, device: torch.device,
                      tile_overlap: Optional[int] = None) -> Dict[str, float]:
    """Per-image statistics over ``seeds``: pixel std and the mean/std of every metric (NaN if not applicable)."""
    lr01, _ = read_image(pair.lq)
    outputs = []
    scores: Dict[str, List[float]] = {name: [] for name in METRICS}
    for seed in seeds:
        sr01 = pipeline(lr01.to(device), seed=seed, noise=noise, tile=tile, tile_overlap=tile_overlap,
                        precision=precision)
        sr_bgr = to_bgr255(sr01)
        outputs.append(sr_bgr)
        if pair.gt is not None:
            psnr, ssim = psnr_ssim_y(sr_bgr, read_gt(pair.gt, sr01.shape), crop_border)
            scores['psnr_y'].append(psnr)
            scores['ssim_y'].append(ssim)
        scores['niqe'].append(niqe_y(sr_bgr, crop_border))
    stats = {'pixel_std': float(np.stack(outputs).std(axis=0).mean())}
    for name, values in scores.items():
        stats[f'{name}_mean'] = finite_mean(values)
        stats[f'{name}_std'] = finite_std(values)
    return stats


def _average(rows: List[Dict[str, float]]) -> Dict[str, float]:
    keys = rows[0].keys()
    averaged = {}
    for key in keys:
        averaged[key] = finite_mean([row[key] for row in rows])
    return averaged


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = ArgumentParser(description='Seed-to-seed variation of LPNSR with learned vs Gaussian noise.')
    parser.add_argument('--pipeline', action='append', required=True,
                        help='LPNSR options file or @PRESET (official/small/tiny); repeat for several')
    parser.add_argument('--dataset', action='append', required=True, help='NAME=GT_DIR,LQ_DIR (GT_DIR may be empty)')
    parser.add_argument('--noise', nargs='+', choices=NOISE_KINDS, default=list(NOISE_KINDS),
                        help='noise sources to compare on the same denoiser (default: both)')
    parser.add_argument('--seeds', type=int_at_least(2), default=5,
                        help='seeds per image, at least 2 (0 .. N-1 plus --seed-offset; default 5)')
    parser.add_argument('--seed-offset', type=int, default=0, help='first seed (default 0)')
    parser.add_argument('--limit', type=positive_int, default=None, help='at most this many images per dataset')
    parser.add_argument('--crop-border', type=non_negative_int, default=4,
                        help='pixels left out at each border for PSNR (default 4)')
    add_run_arguments(parser, out_help='folder for consistency.csv / .json')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Table:
    """Run the benchmark and return its table; a user mistake is one ERROR line and ``SystemExit(2)``."""
    args, device = parse_run_arguments(build_parser(), argv)
    seeds = [args.seed_offset + i for i in range(args.seeds)]
    datasets = load_datasets(args.dataset, args.limit, crop_border=args.crop_border)
    specs = parse_methods(args.pipeline, option='--pipeline', kind='lpnsr')
    with run_output_folder(args):  # made now; removed again if the run is refused before writing
        table = Table(title=f'consistency over {args.seeds} seeds ({args.precision}, {device})',
                      notes=['pixel_std: per-pixel std across seeds in 8-bit levels (population std, ddof 0), '
                             'averaged over pixels and images'])
        for spec in specs:
            pipeline, tile, tile_overlap = open_lpnsr(spec, device=device, tile=args.tile)
            for noise in args.noise:
                if noise == 'learned' and pipeline.noise_predictor is None:
                    table.notes.append(f'{spec.options}: no noise predictor, learned noise skipped')
                    continue
                for name, pairs in datasets:
                    per_image = [
                        image_consistency(pipeline, pair, noise=noise, seeds=seeds, crop_border=args.crop_border,
                                          tile=tile, tile_overlap=tile_overlap, precision=args.precision, device=device)
                        for pair in pairs
                    ]
                    row = {'pipeline': Path(spec.options).stem, 'noise': noise, 'dataset': name, 'images': len(pairs)}
                    row.update(_average(per_image))
                    table.rows.append(row)
        report(table, args.out, 'consistency', meta=vars(args))
    return table


if __name__ == '__main__':
    main()
