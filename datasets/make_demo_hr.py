"""Write a small HR image folder from photographs that scikit-image ships (no download), plus random crops.

Example::

    python datasets/make_demo_hr.py --out datasets/demo/train_hr
    python datasets/make_demo_hr.py --out datasets/demo/val_hr --images hubble_deep_field immunohistochemistry \
        --crops-per-image 2 --crop-size 256 --no-full
"""
from __future__ import annotations

import argparse
import logging
import os
from typing import Callable, Dict, List, Optional

import cv2
import numpy as np
from skimage import data as skimage_data

LOGGER = logging.getLogger('make_demo_hr')

#: Bundled scikit-image photographs (RGB, or grayscale stacked to 3 channels), by name.
BUNDLED_IMAGES: Dict[str, Callable[[], np.ndarray]] = {
    'astronaut': skimage_data.astronaut,
    'coffee': skimage_data.coffee,
    'chelsea': skimage_data.chelsea,
    'rocket': skimage_data.rocket,
    'hubble_deep_field': skimage_data.hubble_deep_field,
    'immunohistochemistry': skimage_data.immunohistochemistry,
    'retina': skimage_data.retina,
    'motorcycle': lambda: skimage_data.stereo_motorcycle()[0],
    'camera': skimage_data.camera,
    'brick': skimage_data.brick,
    'grass': skimage_data.grass,
    'gravel': skimage_data.gravel,
}
DEFAULT_IMAGES = ('astronaut', 'coffee', 'chelsea', 'rocket')


def load_bundled_rgb(name: str) -> np.ndarray:
    """Bundled image ``name`` as (H,W,3) uint8 RGB."""
    if name not in BUNDLED_IMAGES:
        raise KeyError(f"unknown image '{name}'; available: {', '.join(sorted(BUNDLED_IMAGES))}")
    img = np.asarray(BUNDLED_IMAGES[name]())
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def random_crops(img: np.ndarray, *, count: int, size: int, rng: np.random.Generator, name: str) -> List[np.ndarray]:
    """``count`` random ``size`` x ``size`` crops of an (H,W,C) image."""
    height, width = img.shape[:2]
    if count > 0 and (size > height or size > width):
        raise ValueError(f"--crop-size {size} is larger than image '{name}' ({height}x{width})")
    crops = []
    for _ in range(count):
        top = int(rng.integers(0, height - size + 1))
        left = int(rng.integers(0, width - size + 1))
        crops.append(img[top:top + size, left:left + size])
    return crops


def write_rgb_png(path: str, img: np.ndarray) -> None:
    if not cv2.imwrite(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
        raise IOError(f"could not write '{path}'")


def make_demo_hr(*, out: str, images: List[str], crops_per_image: int, crop_size: int, keep_full: bool,
                 seed: int) -> List[str]:
    """Write the folder; returns the written paths."""
    if not images:
        raise ValueError('--images is empty')
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for name in images:
        img = load_bundled_rgb(name)
        outputs = {name: img} if keep_full else {}
        for index, crop in enumerate(random_crops(img, count=crops_per_image, size=crop_size, rng=rng, name=name)):
            outputs[f'{name}_crop{index:02d}'] = crop
        for stem, array in outputs.items():
            path = os.path.join(out, f'{stem}.png')
            write_rgb_png(path, array)
            written.append(path)
    return written


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help='output folder (created)')
    parser.add_argument('--images', nargs='+', default=list(DEFAULT_IMAGES),
                        help=f"bundled images to use; any of: {', '.join(sorted(BUNDLED_IMAGES))}")
    parser.add_argument('--crops-per-image', type=int, default=4, help='random crops written per image')
    parser.add_argument('--crop-size', type=int, default=192, help='side of the random crops (px)')
    parser.add_argument('--no-full', dest='keep_full', action='store_false', help='write the crops only')
    parser.add_argument('--seed', type=int, default=0, help='seed of the crop positions')
    args = parser.parse_args(argv)
    if args.crops_per_image < 0 or args.crop_size <= 0:
        parser.error('--crops-per-image must be >= 0 and --crop-size > 0')
    return args


def main(argv: Optional[List[str]] = None) -> List[str]:
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    args = parse_args(argv)
    written = make_demo_hr(out=args.out, images=args.images, crops_per_image=args.crops_per_image,
                           crop_size=args.crop_size, keep_full=args.keep_full, seed=args.seed)
    LOGGER.info('wrote %d HR images to %s', len(written), args.out)
    return written


if __name__ == '__main__':
    main()
