"""Visual comparison sheet: one PNG grid per image, rows = crops, columns = LR, bicubic, baselines, LPNSR with each
seed (two by default), GT.

Example::

    python -m lpnsr_arch.bench.compare_sheet --lq /data/set5/lr_bicubic_x4/babyx4.png --gt /data/set5/hr/baby.png \
        --method lpnsr:options/inference_lpnsr_official.yml --crop 40,30,32 --out results/sheets

A ``folder:DIR`` method (saved outputs, as in ``bench.quality``) adds one column read from ``DIR``.

The images, crops, method options and saved outputs are checked before any method runs: a user mistake ends the run
with one ``ERROR`` line naming the argument and the file, and exit status 2.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lpnsr_arch.bench.common import (NETWORK_KINDS, ImagePair, Method, Table, add_run_arguments, check_gt_size,
                                     open_method, open_saved_outputs, parse_methods, parse_run_arguments, report,
                                     run_output_folder)
from lpnsr_arch.cli_errors import ArgumentParser, user_errors
from lpnsr_arch.imageio import read_image, write_image

__all__ = ['Crop', 'parse_crop', 'build_sheet', 'main']

logger = logging.getLogger('lpnsr_arch.bench')

Crop = Tuple[int, int, int]
"""``(left, top, size)`` of a square crop in LR pixels."""

LABEL_HEIGHT = 18


def parse_crop(text: str) -> Crop:
    """``LEFT,TOP,SIZE`` in LR pixels."""
    parts = text.split(',')
    if len(parts) != 3 or not all(p.strip().lstrip('-').isdigit() for p in parts):
        raise ValueError(f'crop {text!r}: expected LEFT,TOP,SIZE (LR pixels)')
    left, top, size = (int(p) for p in parts)
    if left < 0 or top < 0 or size < 1:
        raise ValueError(f'crop {text!r}: LEFT and TOP must be >= 0 and SIZE >= 1')
    return left, top, size


def check_crop(crop: Crop, lr_shape: Sequence[int]) -> None:
    """``ValueError`` unless ``crop`` lies inside an LR image of (..., height, width) ``lr_shape``."""
    left, top, size = crop
    if left + size > lr_shape[-1] or top + size > lr_shape[-2]:
        raise ValueError(f'crop {crop} exceeds the LR image {tuple(lr_shape[-2:])}')


def _centre_crop(height: int, width: int) -> Crop:
    size = max(1, min(height, width) // 2)
    return (width - size) // 2, (height - size) // 2, size


def fit_label(label: str, width: int) -> str:
    """``label`` in at most ``width`` characters: its middle is elided (``~``) so that the end (a seed such as
    `` s1``) stays readable."""
    if len(label) <= width:
        return label
    if width < 6:
        return label[-width:]
    tail = (width - 1) // 2
    return label[:width - 1 - tail] + '~' + label[len(label) - tail:]


def _labelled(tile01: Tensor, label: str) -> np.ndarray:
    """(1, 3, h, w) in [0, 1] -> (h + label band, w, 3) uint8 RGB with ``label`` written above."""
    image = np.round(tile01[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    band = np.full((LABEL_HEIGHT, image.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(band, fit_label(label, max(1, image.shape[1] // 7)), (2, LABEL_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX,
                0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([band, image], axis=0)


def build_sheet(lr01: Tensor, gt01: Optional[Tensor], methods: Sequence[Method], crops: Sequence[Crop], *,
                seeds: Sequence[int], scale: int = 4,
                image: Optional[ImagePair] = None) -> Tuple[np.ndarray, List[str]]:
    """The sheet (H, W, 3) uint8 RGB and its column labels. Each stochastic method runs once per seed on the whole
    image, the others once (``image``: the LR file, by which a ``folder`` method finds its saved output)."""
    columns: List[Tuple[str, Tensor]] = [('LR', F.interpolate(lr01, scale_factor=scale, mode='nearest'))]
    for method in methods:
        for seed in (seeds if method.stochastic else seeds[:1]):
            label = f'{method.name} s{seed}' if method.stochastic else method.name
            columns.append((label, method.output(image, lr01, seed=seed, dataset='').cpu()))
    if gt01 is not None:
        columns.append(('GT', gt01[:, :, :lr01.shape[-2] * scale, :lr01.shape[-1] * scale]))
    rows = []
    for left, top, size in crops:
        check_crop((left, top, size), lr01.shape)
        box = (slice(top * scale, (top + size) * scale), slice(left * scale, (left + size) * scale))
        rows.append(np.concatenate([_labelled(image[:, :, box[0], box[1]], label) for label, image in columns],
                                   axis=1))
    return np.concatenate(rows, axis=0), [label for label, _ in columns]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = ArgumentParser(description='PNG comparison grid of crops across methods.')
    parser.add_argument('--lq', type=Path, action='append', required=True, help='LR image (repeat)')
    parser.add_argument('--gt', type=Path, action='append', default=None, help='GT image, same order as --lq')
    parser.add_argument('--method', action='append', default=[], help='as in bench.quality (bicubic is always in)')
    parser.add_argument('--crop', action='append', default=None, help='LEFT,TOP,SIZE in LR px (default: centre)')
    parser.add_argument('--seeds', type=int, nargs='+', default=(0, 1),
                        help='the seeds of the stochastic (LPNSR) methods, a column each (default: 0 1)')
    add_run_arguments(parser, out_help='folder for <name>_sheet.png and sheets.csv/json', out_required=True,
                      precision=False)
    return parser


SheetInput = Tuple[Path, Tensor, Optional[Tensor], List[Crop]]
"""``(lq_path, lr01, gt01 or None, crops)`` of one sheet."""


def load_inputs(lq_paths: Sequence[Path], gt_paths: Optional[Sequence[Path]], crop_texts: Optional[Sequence[str]],
                scale: int = 4) -> List[SheetInput]:
    """Read every ``--lq`` (and ``--gt``) image and check the crops against it, before any method runs:
    ``ImageReadError`` / ``ValueError`` naming the file, the crop or the option."""
    if gt_paths is not None and len(gt_paths) != len(lq_paths):
        raise ValueError(f'--gt given {len(gt_paths)} times for {len(lq_paths)} --lq images (one GT per LR image)')
    crops = [parse_crop(text) for text in crop_texts] if crop_texts else None
    stems: dict = {}
    for lq_path in lq_paths:
        if lq_path.stem in stems:
            raise ValueError(f'--lq {stems[lq_path.stem]} and {lq_path} share the name {lq_path.stem!r}: their sheets '
                             f'({lq_path.stem}_sheet.png) would overwrite each other; rename one')
        stems[lq_path.stem] = lq_path
    inputs = []
    for index, lq_path in enumerate(lq_paths):
        lr01, _ = read_image(lq_path)
        gt01 = read_image(gt_paths[index])[0] if gt_paths else None
        if gt01 is not None:
            check_gt_size(gt_paths[index], gt01.shape, (lr01.shape[-2] * scale, lr01.shape[-1] * scale), scale)
        image_crops = crops or [_centre_crop(*lr01.shape[-2:])]
        for crop in image_crops:
            try:
                check_crop(crop, lr01.shape)
            except ValueError as error:
                raise ValueError(f'--crop for {lq_path}: {error}') from error
        inputs.append((lq_path, lr01, gt01, image_crops))
    return inputs


def main(argv: Optional[Sequence[str]] = None) -> Table:
    """Write the sheets and return their table; a user mistake is one ERROR line and ``SystemExit(2)``."""
    args, device = parse_run_arguments(build_parser(), argv)
    with user_errors(logger):
        inputs = load_inputs(args.lq, args.gt, args.crop)
    specs = parse_methods(['bicubic'] + [text for text in args.method if text != 'bicubic'],
                          kinds=NETWORK_KINDS + ('folder', ))
    images = [ImagePair(lq_path.stem, lq_path) for lq_path, *_ in inputs]
    saved = {spec: open_saved_outputs(spec, [('', images)]) for spec in specs if spec.kind == 'folder'}  # first
    methods = [saved[spec] if spec.kind == 'folder' else open_method(spec, device=device, tile=args.tile)
               for spec in specs]
    with run_output_folder(args):  # made now; removed again if the run is refused before writing
        table = Table(title='comparison sheets')
        for image, (lq_path, lr01, gt01, crops) in zip(images, inputs):
            sheet, labels = build_sheet(lr01, gt01, methods, crops, seeds=tuple(args.seeds), image=image)
            out_path = args.out / f'{lq_path.stem}_sheet.png'
            write_image(out_path, torch.from_numpy(sheet).permute(2, 0, 1)[None].float() / 255.0)
            table.rows.append({'image': lq_path.name, 'sheet': str(out_path), 'columns': ' | '.join(labels),
                               'height': sheet.shape[0], 'width': sheet.shape[1]})
        report(table, args.out, 'sheets', meta=vars(args))
    return table


if __name__ == '__main__':
    main()
