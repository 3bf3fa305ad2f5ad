"""Cut every image of a folder into overlapping sub-images (the usual DF2K/DIV2K preparation step).

Positions step by ``--step`` from the top-left; a last row/column flush with the border is added when the
remainder exceeds ``--thresh-size``. Images smaller than ``--crop-size`` are skipped with a warning. A user mistake
(missing or empty ``--input``, an unreadable image, an ``--output`` that is a file) ends the script with one
``ERROR`` line naming the path, and exit status 2.

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
from lpnsr_arch.cli_errors import (ArgumentParser, non_negative_int, positive_int, prepare_output_folder,  # noqa: E402
                                   require_folder, user_errors)
from lpnsr_arch.data.sources import scan_image_folder  # noqa: E402

LOGGER = logging.getLogger('extract_subimages')


def crop_starts(length: int, *, crop_size: int, step: int, thresh_size: int) -> List[int]:
    """Start offsets along one axis of length ``length`` (empty when ``length < crop_size``)."""
    if length < crop_size:
        return []
    starts = list(range(0, length - crop_size + 1, step))
    if length - (starts[-1] + crop_size) > thresh_size:
        starts.append(length - crop_size)
    return starts


def list_input_images(input_folder: str) -> List[str]:
    """The images under ``input_folder`` (relative paths, sorted); ``FileNotFoundError`` / ``NotADirectoryError`` /
    ``ValueError`` naming ``--input`` when it is missing, a file, or without images."""
    require_folder(input_folder, '--input')
    paths = scan_image_folder(input_folder)
    if not paths:
        raise ValueError(f"--input '{input_folder}' holds no image")
    return paths


def extract_subimages(*, input_folder: str, output: str, crop_size: int, step: int, thresh_size: int,
                      compress_level: int) -> int:
    """Write ``<stem>_s###.png`` sub-images of every image under ``input_folder``; returns how many were written.

    Raises as :func:`list_input_images`, ``NotADirectoryError`` (``--output`` is a file) or ``OSError`` (an image
    that cannot be read or written), each naming the path.
    """
    paths = list_input_images(input_folder)
    prepare_output_folder(output, '--output')
    return write_subimages(input_folder, paths, output, crop_size=crop_size, step=step, thresh_size=thresh_size,
                           compress_level=compress_level)


def write_subimages(input_folder: str, paths: List[str], output: str, *, crop_size: int, step: int,
                    thresh_size: int, compress_level: int) -> int:
    """Write the sub-images of ``paths`` (relative to ``input_folder``) into the existing folder ``output``;
    returns how many were written. ``OSError`` names an image that cannot be read or written."""
    written = 0
    for rel_path in paths:
        img = cv2.imread(os.path.join(input_folder, rel_path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise IOError(f"cannot read image '{os.path.join(input_folder, rel_path)}' (not an image, or damaged)")
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
    """The command line (a bad value is one ``error:`` line and exit status 2)."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--input', required=True, help='image folder (scanned recursively)')
    parser.add_argument('--output', required=True, help='output folder (created)')
    parser.add_argument('--crop-size', type=positive_int, default=480, help='side of a sub-image (px)')
    parser.add_argument('--step', type=positive_int, default=240, help='stride between sub-images (px)')
    parser.add_argument('--thresh-size', type=non_negative_int, default=0,
                        help='add a border-flush row/column when the leftover exceeds this (px)')
    parser.add_argument('--compress-level', type=int, default=3, choices=range(10), metavar='0..9')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the script; returns the number of sub-images. A user mistake is one ERROR line and ``SystemExit(2)``."""
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    args = parse_args(argv)
    with user_errors(LOGGER):
        paths = list_input_images(args.input)
        prepare_output_folder(args.output, '--output')
    with user_errors(LOGGER, types=(OSError, )):
        count = write_subimages(args.input, paths, args.output, crop_size=args.crop_size, step=args.step,
                                thresh_size=args.thresh_size, compress_level=args.compress_level)
    LOGGER.info('wrote %d sub-images to %s', count, args.output)
    return count


if __name__ == '__main__':
    main()
