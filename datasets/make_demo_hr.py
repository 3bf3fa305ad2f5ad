"""Write a small HR image folder from photographs that scikit-image ships (no download), plus random crops.

Example::

    python datasets/make_demo_hr.py --out datasets/demo/train_hr
    python datasets/make_demo_hr.py --out datasets/demo/val_hr --images hubble_deep_field immunohistochemistry \
        --crops-per-image 2 --crop-size 256 --no-full

The image names, the crop size and ``--out`` are checked before anything is written: a user mistake ends the
script with one ``ERROR`` line naming the option, and exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Dict, List, Optional

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))
from lpnsr_arch.cli_errors import (ArgumentParser, non_negative_int, positive_int, prepare_output_folder,  # noqa: E402
                                   user_errors)
from lpnsr_arch.data.sample_photos import (BUNDLED_IMAGES, DEFAULT_IMAGES, check_image_names,  # noqa: E402
                                           load_bundled_rgb, write_rgb_png)

LOGGER = logging.getLogger('make_demo_hr')


def check_crop_fits(img: np.ndarray, *, count: int, size: int, name: str) -> None:
    """``ValueError`` naming ``--crop-size`` and image ``name`` when crops are asked for and do not fit in it."""
    height, width = img.shape[:2]
    if count > 0 and (size > height or size > width):
        raise ValueError(f"--crop-size {size} is larger than image '{name}' ({height}x{width})")


def random_crops(img: np.ndarray, *, count: int, size: int, rng: np.random.Generator, name: str) -> List[np.ndarray]:
    """``count`` random ``size`` x ``size`` crops of an (H,W,C) image."""
    check_crop_fits(img, count=count, size=size, name=name)
    height, width = img.shape[:2]
    crops = []
    for _ in range(count):
        top = int(rng.integers(0, height - size + 1))
        left = int(rng.integers(0, width - size + 1))
        crops.append(img[top:top + size, left:left + size])
    return crops


def load_demo_images(*, out: str, images: List[str], crops_per_image: int, crop_size: int) -> Dict[str, np.ndarray]:
    """Every check before anything is written (names, crop size, ``--out``, created); returns the images by name."""
    check_image_names(images)
    loaded = {name: load_bundled_rgb(name) for name in images}
    for name, img in loaded.items():
        check_crop_fits(img, count=crops_per_image, size=crop_size, name=name)
    prepare_output_folder(out, '--out')
    return loaded


def make_demo_hr(*, out: str, images: List[str], crops_per_image: int, crop_size: int, keep_full: bool,
                 seed: int) -> List[str]:
    """Write the folder; returns the written paths. Raises as :func:`load_demo_images` before writing anything."""
    loaded = load_demo_images(out=out, images=images, crops_per_image=crops_per_image, crop_size=crop_size)
    return write_demo_hr(loaded, out=out, crops_per_image=crops_per_image, crop_size=crop_size, keep_full=keep_full,
                         seed=seed)


def write_demo_hr(images: Dict[str, np.ndarray], *, out: str, crops_per_image: int, crop_size: int, keep_full: bool,
                  seed: int) -> List[str]:
    """Write the full images (``keep_full``) and their random crops into the existing folder ``out``; returns the
    written paths (``OSError`` names one that cannot be written)."""
    rng = np.random.default_rng(seed)
    written = []
    for name, img in images.items():
        outputs = {name: img} if keep_full else {}
        for index, crop in enumerate(random_crops(img, count=crops_per_image, size=crop_size, rng=rng, name=name)):
            outputs[f'{name}_crop{index:02d}'] = crop
        for stem, array in outputs.items():
            path = os.path.join(out, f'{stem}.png')
            write_rgb_png(path, array)
            written.append(path)
    return written


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line (a bad value is one ``error:`` line and exit status 2)."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help='output folder (created)')
    parser.add_argument('--images', nargs='+', default=list(DEFAULT_IMAGES),
                        help=f"bundled images to use; any of: {', '.join(sorted(BUNDLED_IMAGES))}")
    parser.add_argument('--crops-per-image', type=non_negative_int, default=4, help='random crops written per image')
    parser.add_argument('--crop-size', type=positive_int, default=192, help='side of the random crops (px)')
    parser.add_argument('--no-full', dest='keep_full', action='store_false', help='write the crops only')
    parser.add_argument('--seed', type=int, default=0, help='seed of the crop positions')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Run the script; returns the written paths. A user mistake is one ERROR line and ``SystemExit(2)``."""
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    args = parse_args(argv)
    with user_errors(LOGGER):
        images = load_demo_images(out=args.out, images=args.images, crops_per_image=args.crops_per_image,
                                  crop_size=args.crop_size)
    with user_errors(LOGGER, types=(OSError, )):
        written = write_demo_hr(images, out=args.out, crops_per_image=args.crops_per_image, crop_size=args.crop_size,
                                keep_full=args.keep_full, seed=args.seed)
    LOGGER.info('wrote %d HR images to %s', len(written), args.out)
    return written


if __name__ == '__main__':
    main()
