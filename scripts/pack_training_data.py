"""Copy the demonstration model's training and validation images into one folder for a device call.

The device tool carries at most 64 MiB with the repository; ``train_hr`` is re-encoded as lossless WebP (every pixel
kept: each file is read back and compared) and ``val_realesrgan_x4`` copied as it is::

    .venv/bin/python scripts/pack_training_data.py --data ../shared/data --out .data

On the device, ``scripts/gpu_train_swinir_probe.sh`` links ``../shared/data`` to the folder, so the options' paths hold.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np

logger = logging.getLogger('pack_training_data')


def pack_lossless_webp(src: Path, dst: Path) -> int:
    """Write every PNG under ``src`` as ``dst/<same relative path>.webp``, lossless; returns the bytes written.
    Raises ``ValueError`` naming ``src`` when it holds no images or other files than PNGs, or the file that cannot be
    read, written or read back identical."""
    files = sorted(path for path in src.rglob('*') if path.is_file() and not path.name.startswith('.'))
    others = [str(path) for path in files if path.suffix.lower() != '.png']
    if not files or others:
        raise ValueError(f'{src}: ' + (f'only PNG files are packed, found {others[:3]}' if others else 'no images'))
    total = 0
    for png in files:
        image = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError(f'{png}: not a readable image')
        target = dst / png.relative_to(src).with_suffix('.webp')
        target.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(target), image, [cv2.IMWRITE_WEBP_QUALITY, 101]):  # quality above 100 = lossless
            raise ValueError(f'{target}: this OpenCV cannot write WebP')
        back = cv2.imread(str(target), cv2.IMREAD_UNCHANGED)
        if back is None or back.shape != image.shape or not np.array_equal(back, image):
            raise ValueError(f'{png}: the lossless WebP copy {target} differs from it')
        total += target.stat().st_size
    return total


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', type=Path, default=Path('../shared/data'))
    parser.add_argument('--out', type=Path, default=Path('.data'))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    for needed in ('train_hr', 'val_realesrgan_x4'):
        if not (args.data / needed).is_dir():
            logger.error('%s: no folder %s', args.data, needed)
            return 2
    try:
        size = pack_lossless_webp(args.data / 'train_hr', args.out / 'train_hr')
    except ValueError as err:
        logger.error('%s', err)
        return 2
    shutil.copytree(args.data / 'val_realesrgan_x4', args.out / 'val_realesrgan_x4', dirs_exist_ok=True)
    logger.info('%s: train_hr as lossless WebP (%.1f MB), val_realesrgan_x4 copied', args.out, size / 1e6)
    return 0


if __name__ == '__main__':
    sys.exit(main())
