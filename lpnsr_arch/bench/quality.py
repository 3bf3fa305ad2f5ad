"""Quality benchmark: methods x datasets -> PSNR-Y, SSIM-Y (crop 4) and NIQE (BasicSR's metrics).

Example::

    python -m lpnsr_arch.bench.quality --out results/bench_quality \
        --method bicubic --method lpnsr:options/inference_lpnsr_official.yml \
        --method official=folder:results/official_outputs/{dataset} \
        --dataset val=/data/val_realesrgan_x4/gt,/data/val_realesrgan_x4/lq \
        --dataset set5=/data/set5/hr,/data/set5/lr_bicubic_x4

A ``folder:DIR`` method scores outputs saved earlier (this project's ``lpnsr_arch/inference.py``, the official code,
another tool) instead of computing them; ``{dataset}`` in ``DIR`` stands for each dataset's name. Every dataset and
every saved output is read, and every method's options file checked, before the first method runs: a user mistake
ends the run with one ``ERROR`` line naming the argument and the file, and exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import math
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from lpnsr_arch.bench.common import (NETWORK_KINDS, Method, Table, add_run_arguments, finite_mean, load_datasets,
                                     lpips_note, niqe_y, open_method, open_saved_outputs, parse_methods,
                                     parse_run_arguments, psnr_ssim_y, read_gt, report, run_output_folder, to_bgr255)
from lpnsr_arch.cli_errors import ArgumentParser, non_negative_int, positive_int
from lpnsr_arch.imageio import read_image
from lpnsr_arch.pipeline import NOISE_KINDS

__all__ = ['score_images', 'summarise', 'evaluate', 'main']

logger = logging.getLogger('lpnsr_arch.bench')


def score_images(method: Method, pairs, *, seed: int, crop_border: int, dataset: str = '') -> List[Dict[str, object]]:
    """One row per image of ``pairs`` (the images of ``dataset``): ``image``, ``psnr_y``/``ssim_y`` (NaN without a
    GT), ``niqe`` (NaN where undefined) and ``seconds`` (reading the LR image, the method's upscale or the saved
    output, and the metrics; no warm-up: the first image of a method also pays its one-time costs. ``bench.speed`` is
    the timing benchmark)."""
    rows: List[Dict[str, object]] = []
    for pair in pairs:
        started = time.perf_counter()
        lr01, _ = read_image(pair.lq)
        sr01 = method.output(pair, lr01, seed=seed, dataset=dataset)
        sr_bgr = to_bgr255(sr01)
        psnr = ssim = math.nan
        if pair.gt is not None:
            psnr, ssim = psnr_ssim_y(sr_bgr, read_gt(pair.gt, sr01.shape), crop_border)
        rows.append({'image': pair.name, 'psnr_y': psnr, 'ssim_y': ssim, 'niqe': niqe_y(sr_bgr, crop_border),
                     'seconds': time.perf_counter() - started})
    return rows


def summarise(method_name: str, dataset: str, per_image: Sequence[Dict[str, object]]) -> Dict[str, object]:
    """The table row of one method on one dataset: means over images (NaNs left out), and the NIQE median.

    NIQE of an image with few 96-px blocks is unstable (a 256 x 256 image has four), so one image can move the mean
    of a five-image set by several points; the median and the per-image file show when that happens.
    """
    finite_niqes = [float(row['niqe']) for row in per_image if not math.isnan(float(row['niqe']))]
    return {
        'method': method_name, 'dataset': dataset, 'images': len(per_image),
        'psnr_y': finite_mean([float(row['psnr_y']) for row in per_image]),
        'ssim_y': finite_mean([float(row['ssim_y']) for row in per_image]),
        'niqe': finite_mean(finite_niqes), 'niqe_median': float(np.median(finite_niqes)) if finite_niqes else math.nan,
        'niqe_images': len(finite_niqes),
        'seconds_per_image': sum(float(row['seconds']) for row in per_image) / max(len(per_image), 1)
    }


def evaluate(method: Method, dataset: str, pairs, *, seed: int, crop_border: int) -> Dict[str, object]:
    """One row: the method's mean metrics over ``pairs`` (NaN where a metric does not apply)."""
    return summarise(method.name, dataset, score_images(method, pairs, seed=seed, crop_border=crop_border,
                                                        dataset=dataset))


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = ArgumentParser(description='PSNR/SSIM (Y, crop border) and NIQE of methods on datasets.')
    parser.add_argument('--method', action='append', required=True,
                        help='[NAME=]bicubic | basicsr:OPTIONS.yml | lpnsr:OPTIONS.yml | lpnsr:@PRESET | '
                             'folder:DIR (saved outputs; {dataset} in DIR: each dataset\'s name) (repeat)')
    parser.add_argument('--dataset', action='append', required=True,
                        help='NAME=GT_DIR,LQ_DIR (GT_DIR empty for no-reference sets; repeat)')
    parser.add_argument('--limit', type=positive_int, default=None, help='at most this many images per dataset')
    parser.add_argument('--crop-border', type=non_negative_int, default=4,
                        help='pixels left out at each border for PSNR/SSIM (default 4)')
    parser.add_argument('--seed', type=int, default=12345, help='seed of the stochastic methods (default 12345)')
    parser.add_argument('--noise', choices=NOISE_KINDS, default=None, help='LPNSR noise override')
    add_run_arguments(parser, out_help='folder for quality.csv / .json and quality_per_image.csv / .json')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> Table:
    """Run the benchmark and return its table; a user mistake is one ERROR line and ``SystemExit(2)``."""
    args, device = parse_run_arguments(build_parser(), argv)
    datasets = load_datasets(args.dataset, args.limit, crop_border=args.crop_border)
    specs = parse_methods(args.method, kinds=NETWORK_KINDS + ('folder', ))
    saved = {spec: open_saved_outputs(spec, datasets) for spec in specs if spec.kind == 'folder'}  # checked up front
    table = Table(title=f'quality (Y channel, crop {args.crop_border}, seed {args.seed}, {args.precision}, {device})',
                  notes=[lpips_note()])
    per_image = Table(title=f'{table.title}, per image')
    with run_output_folder(args):  # made now; removed again if the run is refused before writing
        for spec in specs:
            method = saved[spec] if spec.kind == 'folder' else open_method(
                spec, device=device, noise=args.noise, tile=args.tile, precision=args.precision)
            for name, pairs in datasets:
                logger.info(f'{method.name} on {name}: {len(pairs)} images')
                scores = score_images(method, pairs, seed=args.seed, crop_border=args.crop_border, dataset=name)
                table.rows.append(summarise(method.name, name, scores))
                per_image.rows += [{'method': method.name, 'dataset': name, **row} for row in scores]
        report(table, args.out, 'quality', meta=vars(args))
        if args.out is not None:
            report(per_image, args.out, 'quality_per_image', meta=vars(args), echo=False)
    return table


if __name__ == '__main__':
    main()
