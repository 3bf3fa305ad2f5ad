"""The photographs scikit-image ships (no download): the demo's inputs and ``datasets/make_demo_hr.py``'s sources."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Sequence, Union

import cv2
import numpy as np
from skimage import data as skimage_data

__all__ = ['BUNDLED_IMAGES', 'DEFAULT_IMAGES', 'check_image_names', 'load_bundled_rgb', 'write_rgb_png']

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


def check_image_names(names: Sequence[str], option: str = '--images') -> None:
    """``ValueError`` for an empty list, ``KeyError`` naming ``option`` and the names that are not bundled images."""
    if not names:
        raise ValueError(f'{option} is empty')
    unknown = [name for name in names if name not in BUNDLED_IMAGES]
    if unknown:
        raise KeyError(f"{option}: unknown image(s) {', '.join(unknown)}; available: "
                       f"{', '.join(sorted(BUNDLED_IMAGES))}")


def load_bundled_rgb(name: str) -> np.ndarray:
    """Bundled image ``name`` as (H, W, 3) uint8 RGB (a grey one stacked to 3 channels)."""
    check_image_names([name])
    image = np.asarray(BUNDLED_IMAGES[name]())
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def write_rgb_png(path: Union[str, Path], image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 RGB array as a PNG; ``OSError`` naming the file when it cannot be written."""
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write '{path}'")
