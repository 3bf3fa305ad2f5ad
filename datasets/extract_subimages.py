"""Cut every image of a folder into overlapping sub-images (the usual DF2K/DIV2K preparation step).

Positions step by ``--step`` from the top-left; a last row/column flush with the border is added when the
remainder exceeds ``--thresh-size``. Images smaller than ``--crop-size`` are skipped with a warning.

Example::

    python datasets/extract_subimages.py --input DF2K/HR --output DF2K/HR_sub --crop-size 480 --step 240
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

import cv2
import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))
from lpnsr_arch.data.realesrgan_crop_dataset import scan_image_folder  # noqa: E402

LOGGER = logging.getLogger('extract_subimages')


def crop_starts(length: int, *, crop_size: int, step: int, thresh_size: int) -> List[int]:
    """Start offsets along one axis of length ``length`` (empty when ``length < crop_size``)."""
    if length < crop_size:
        return []
    starts = list(range(0, length - crop_size + 1, step))
    if length - (starts[-1] + crop_size) > thresh_size:
        starts.append(length - crop_size)
    return starts


def extract_subimages(*, input_folder: str, output: str, crop_size: int, step: int, thresh_size: int,
                      compress_level: int) -> int:
    """Write ``<stem>_s###.png`` sub-images of every image under ``input_folder``; returns how many were written."""
    if not os.path.isdir(input_folder):
        raise FileNotFoundError(f"--input '{input_folder}' does not exist or is not a folder")
    paths = scan_image_folder(input_folder)
    if not paths:
        raise ValueError(f"--input '{input_folder}' holds no image")
    os.makedirs(output, exist_ok=True)
    written = 0
    for rel_path in paths:
        img = cv2.imread(os.path.join(input_folder, rel_path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise IOError(f"cannot read image '{os.path.join(input_folder, rel_path)}'")
        rows = crop_starts(img.shape[0], crop_size=crop_size, step=step, thresh_size=thresh_size)
        cols = crop_starts(img.shape[1], crop_size=crop_size, step=step, thresh_size=thresh_size)
        if not rows or not cols:
            LOGGER.warning('skipped %s: %dx%d is smaller than --crop-size %d', rel_path, img.shape[0],
                           img.shape[1], crop_size)
            continue
        stem = os.path.splitext(rel_path)[0].replace(os.sep, '_')
        index = 0
        for top in rows:
            for left in cols:
                index += 1
                sub = np.ascontiguousarray(img[top:top + crop_size, left:left + crop_size, ...])
                path = os.path.join(output, f'{stem}_s{index:03d}.png')
                if not cv2.imwrite(path, sub, [cv2.IMWRITE_PNG_COMPRESSION, compress_level]):
                    raise IOError(f"could not write '{path}'")
        written += index
    return written


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--input', required=True, help='image folder (scanned recursively)')
    parser.add_argument('--output', required=True, help='output folder (created)')
    parser.add_argument('--crop-size', type=int, default=480, help='side of a sub-image (px)')
    parser.add_argument('--step', type=int, default=240, help='stride between sub-images (px)')
    parser.add_argument('--thresh-size', type=int, default=0,
                        help='add a border-flush row/column when the leftover exceeds this (px)')
    parser.add_argument('--compress-level', type=int, default=3, choices=range(10), metavar='0..9')
    args = parser.parse_args(argv)
    if args.crop_size <= 0 or args.step <= 0 or args.thresh_size < 0:
        parser.error('--crop-size and --step must be > 0, --thresh-size >= 0')
    return args


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    args = parse_args(argv)
    count = extract_subimages(input_folder=args.input, output=args.output, crop_size=args.crop_size,
                              step=args.step, thresh_size=args.thresh_size, compress_level=args.compress_level)
    LOGGER.info('wrote %d sub-images to %s', count, args.output)
    return count


if __name__ == '__main__':
    main()
