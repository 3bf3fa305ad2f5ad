"""Fixed-seed LR/HR test pairs from an HR folder (used by ``datasets/make_test_pairs.py`` and ``make demo``).

``realesrgan`` uses the training degradation (:class:`~lpnsr_arch.data.degradation.SecondOrderDegradation`, kernels
sampled by :class:`~lpnsr_arch.data.realesrgan_crop_dataset.LPNSRRealESRGANDataset`); ``bicubic`` uses BasicSR's
MATLAB-style bicubic. Image ``i`` is made with seed ``seed + i``, so each pair does not depend on the others.

:func:`prepare_test_pairs` makes every check (the HR folder and each of its images, the recipe, the output folder)
before :func:`write_test_pairs` writes anything; their exceptions name the option or the file at fault.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
from basicsr.utils import img2tensor, set_random_seed, tensor2img
from basicsr.utils.matlab_functions import imresize

from lpnsr_arch.cli_errors import prepare_output_folder, require_folder
from lpnsr_arch.data.degradation import (DEGRADATION_KEYS, OPTIONAL_DEGRADATION_KEYS, REALESRGAN_X4PLUS_DEGRADATION,
                                        SecondOrderDegradation)
from lpnsr_arch.data.realesrgan_crop_dataset import REALESRGAN_X4PLUS_KERNELS, LPNSRRealESRGANDataset
from lpnsr_arch.data.sources import folder_holds_files
from lpnsr_arch.imageio import IMAGE_EXTENSIONS
from lpnsr_arch.pipeline import load_options

DEGRADATIONS = ('realesrgan', 'bicubic')


def load_recipe(path: Optional[str]) -> Dict[str, dict]:
    """Degradation and kernel settings: Real-ESRGAN x4plus, or those of a training YAML."""
    if path is None:
        return {'degradation': dict(REALESRGAN_X4PLUS_DEGRADATION), 'kernels': dict(REALESRGAN_X4PLUS_KERNELS)}
    try:  # the current folder, then the repository; ValueError naming the file: not valid YAML, or not a mapping
        recipe = load_options(path)
    except FileNotFoundError as error:
        raise FileNotFoundError(f'--opt: {error}') from error
    datasets = recipe.get('datasets')
    train_opt = datasets.get('train') if isinstance(datasets, dict) else None
    if not isinstance(train_opt, dict):
        raise KeyError(f"--opt '{path}' has no datasets.train section (the kernel settings live there)")
    missing = [key for key in REALESRGAN_X4PLUS_KERNELS if key not in train_opt]
    if missing:
        raise KeyError(f"--opt '{path}': datasets.train lacks kernel option(s) {missing}")
    keys = (*DEGRADATION_KEYS, *OPTIONAL_DEGRADATION_KEYS)
    return {'degradation': {key: recipe[key] for key in keys if key in recipe},
            'kernels': {key: train_opt[key] for key in REALESRGAN_X4PLUS_KERNELS}}


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop (H,W,C) so that H and W are multiples of ``scale``."""
    height, width = img.shape[:2]
    return img[:height - height % scale, :width - width % scale]


def read_bgr01(path: str) -> np.ndarray:
    """(H,W,3) BGR float32 in [0, 1]; ``OSError`` naming a file that is not a readable image."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise IOError(f"cannot read image '{path}' (not an image, or damaged)")
    return img.astype(np.float32) / 255.0


def check_hr_images(paths: List[str], *, min_side: int, scale: int) -> None:
    """Read every HR image once: ``OSError`` names one that cannot be read, ``ValueError`` one whose sides (cropped
    to a multiple of ``scale``) are under ``min_side``."""
    for path in paths:
        height, width = mod_crop(read_bgr01(path), scale).shape[:2]
        if min(height, width) < min_side:
            raise ValueError(f"'{path}' is {height}x{width} (cropped to a multiple of {scale}); this degradation "
                             f'needs sides of at least {min_side} px')


def pair_name(gt_path: str, hr: str) -> str:
    """The output file name of an HR image: its path under ``hr`` with folders joined by ``_``, as PNG."""
    return os.path.splitext(os.path.relpath(gt_path, hr))[0].replace(os.sep, '_') + '.png'


def check_pair_names(paths: List[str], hr: str) -> None:
    """``ValueError`` naming the HR files that would be written under one name (``a/b.png`` and ``a_b.png``, or
    ``c.png`` and ``c.jpg``): the later pair would overwrite the earlier one."""
    sources: Dict[str, List[str]] = {}
    for path in paths:
        sources.setdefault(pair_name(path, hr), []).append(path)
    clashes = {name: files for name, files in sources.items() if len(files) > 1}
    if clashes:
        listed = '; '.join(f"{name} <- {', '.join(files)}" for name, files in sorted(clashes.items()))
        raise ValueError(f"--hr '{hr}': several images would be written under one name ({listed}); rename them")


def write_png(path: str, img: np.ndarray) -> None:
    if not cv2.imwrite(path, img):
        raise IOError(f"could not write '{path}'")


def bicubic_lq(gt_bgr01: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-style bicubic x1/scale of a (H,W,3) BGR [0,1] image; returns uint8."""
    lq = imresize(gt_bgr01, 1.0 / scale)
    return (np.clip(lq, 0, 1) * 255.0).round().astype(np.uint8)


def realesrgan_lq(gt_bgr01: np.ndarray, *, degradation: SecondOrderDegradation,
                  kernels: Dict[str, torch.Tensor]) -> np.ndarray:
    """Second-order degradation of a (H,W,3) BGR [0,1] image; returns (H/s,W/s,3) BGR uint8."""
    gt = img2tensor(gt_bgr01, bgr2rgb=True, float32=True).unsqueeze(0)
    lq, _ = degradation(gt, kernels['kernel1'][None], kernels['kernel2'][None], kernels['sinc_kernel'][None])
    return tensor2img(lq, rgb2bgr=True, min_max=(0, 1))


TestPairSource = Tuple[LPNSRRealESRGANDataset, SecondOrderDegradation]
"""The HR image list with its kernel sampler, and the degradation."""


def prepare_test_pairs(*, hr: str, out: str, degradation_name: str, scale: int,
                       recipe_path: Optional[str] = None) -> TestPairSource:
    """Every check before anything is written: ``--hr`` (a folder of readable images, large enough for the
    degradation), the recipe (``--opt``), ``--out`` (created with ``gt/`` and ``lq/``). Raises ``FileNotFoundError``,
    ``NotADirectoryError``, ``OSError``, ``ValueError`` or ``KeyError`` naming the option or the file."""
    if degradation_name not in DEGRADATIONS:
        raise ValueError(f'--degradation must be one of {DEGRADATIONS}, got {degradation_name!r}')
    require_folder(hr, '--hr')
    if not folder_holds_files(hr):
        raise ValueError(f"--hr '{hr}' holds no image ({', '.join(IMAGE_EXTENSIONS)})")
    recipe = load_recipe(recipe_path)
    recipe['degradation']['bicubic_prob'] = 0.0
    dataset_opt = {'name': 'make_test_pairs', 'dataroot_gt': hr, 'io_backend': {'type': 'disk'},
                   'use_hflip': False, 'use_rot': False, **recipe['kernels']}
    kernel_source = LPNSRRealESRGANDataset(dataset_opt)  # its image list and kernel sampler, not its crops
    check_pair_names(kernel_source.paths, hr)
    degradation = SecondOrderDegradation(opt=recipe['degradation'], scale=scale)
    min_side = degradation.min_gt_size() if degradation_name == 'realesrgan' else scale
    check_hr_images(kernel_source.paths, min_side=min_side, scale=scale)
    prepare_output_folder(out, '--out')
    for folder in ('gt', 'lq'):
        prepare_output_folder(os.path.join(out, folder), f'--out/{folder}')
    return kernel_source, degradation


def make_test_pairs(*, hr: str, out: str, degradation_name: str, scale: int, seed: int,
                    recipe_path: Optional[str] = None) -> List[str]:
    """Write the pairs; returns the image names. ``realesrgan`` degrades every image (a recipe's ``bicubic_prob`` is
    set to 0: ``bicubic`` is the way to clean pairs); its other settings, ``second_order_prob`` included, apply.
    Raises as :func:`prepare_test_pairs` before anything is written."""
    source = prepare_test_pairs(hr=hr, out=out, degradation_name=degradation_name, scale=scale,
                                recipe_path=recipe_path)
    return write_test_pairs(source, hr=hr, out=out, degradation_name=degradation_name, scale=scale, seed=seed)


def write_test_pairs(source: TestPairSource, *, hr: str, out: str, degradation_name: str, scale: int,
                     seed: int) -> List[str]:
    """Write ``<out>/gt/<name>.png`` and ``<out>/lq/<name>.png`` for every image of the prepared ``source``
    (:func:`prepare_test_pairs`); returns the names. ``OSError`` names a file that cannot be read or written."""
    kernel_source, degradation = source
    names = []
    for index, gt_path in enumerate(kernel_source.paths):
        set_random_seed(seed + index)
        gt = mod_crop(read_bgr01(gt_path), scale)
        if degradation_name == 'bicubic':
            lq = bicubic_lq(gt, scale)
        else:
            lq = realesrgan_lq(gt, degradation=degradation, kernels=kernel_source.sample_kernels())
        name = pair_name(gt_path, hr)
        write_png(os.path.join(out, 'gt', name), (gt * 255.0).round().astype(np.uint8))
        write_png(os.path.join(out, 'lq', name), lq)
        names.append(name)
    return names
