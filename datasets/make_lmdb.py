"""Pack an image folder into an LMDB with BasicSR's ``lmdb_util`` (keys: relative paths without extension).

Example::

    python datasets/make_lmdb.py --input datasets/demo/train_hr --output datasets/demo/train_hr.lmdb
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional, Tuple

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))
import lpnsr_arch  # noqa: E402,F401  (torchvision shim before BasicSR)
from basicsr.utils.lmdb_util import make_lmdb_from_imgs  # noqa: E402

from lpnsr_arch.data.realesrgan_crop_dataset import scan_image_folder  # noqa: E402

LOGGER = logging.getLogger('make_lmdb')
_MIN_MAP_SIZE = 64 * 1024 ** 2


def list_images_and_keys(folder: str) -> Tuple[List[str], List[str]]:
    """Relative image paths under ``folder`` and their LMDB keys (path without extension); checks key clashes."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--input '{folder}' does not exist or is not a folder")
    paths = scan_image_folder(folder)
    if not paths:
        raise ValueError(f"--input '{folder}' holds no image")
    keys = [os.path.splitext(path)[0] for path in paths]
    clashes = sorted({key for key in keys if keys.count(key) > 1})
    if clashes:
        raise ValueError(f"--input '{folder}': several files share the key(s) {clashes} (same name, other extension)")
    return paths, keys


def estimate_map_size(folder: str, paths: List[str]) -> int:
    """Generous LMDB size: encoded files re-encoded as PNG level 1 stay well under 20x a JPEG's size."""
    total = sum(os.path.getsize(os.path.join(folder, path)) for path in paths)
    return max(_MIN_MAP_SIZE, 20 * total)


def make_lmdb(*, input_folder: str, output: str, compress_level: int) -> int:
    """Write ``output`` (``*.lmdb``); returns the number of images."""
    if not output.endswith('.lmdb'):
        raise ValueError(f"--output must end with '.lmdb', got '{output}'")
    if os.path.exists(output):
        raise FileExistsError(f"--output '{output}' already exists; remove it first")
    paths, keys = list_images_and_keys(input_folder)
    make_lmdb_from_imgs(input_folder, output, paths, keys, compress_level=compress_level,
                        map_size=estimate_map_size(input_folder, paths))
    return len(paths)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--input', required=True, help='image folder (scanned recursively)')
    parser.add_argument('--output', required=True, help="LMDB folder to create; must end with '.lmdb'")
    parser.add_argument('--compress-level', type=int, default=1, choices=range(10), metavar='0..9',
                        help='PNG compression level of the stored images')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    args = parse_args(argv)
    count = make_lmdb(input_folder=args.input, output=args.output, compress_level=args.compress_level)
    LOGGER.info('packed %d images into %s', count, args.output)
    return count


if __name__ == '__main__':
    main()
