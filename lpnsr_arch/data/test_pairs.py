"""Fixed-seed LR/HR test pairs from an HR folder (used by ``datasets/make_test_pairs.py`` and ``make demo``).

``realesrgan`` uses the training degradation (:class:`~lpnsr_arch.data.degradation.SecondOrderDegradation`, kernels
sampled by :class:`~lpnsr_arch.data.realesrgan_crop_dataset.LPNSRRealESRGANDataset`); ``bicubic`` uses BasicSR's
MATLAB-style bicubic. Image ``i`` is made with seed ``seed + i``, so each pair does not depend on the others.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

import cv2
import numpy as np
import torch
import yaml
from basicsr.utils import img2tensor, set_random_seed, tensor2img
from basicsr.utils.matlab_functions import imresize

from lpnsr_arch.data.degradation import (DEGRADATION_KEYS, OPTIONAL_DEGRADATION_KEYS, REALESRGAN_X4PLUS_DEGRADATION,
                                        SecondOrderDegradation)
from lpnsr_arch.data.realesrgan_crop_dataset import (REALESRGAN_X4PLUS_KERNELS, LPNSRRealESRGANDataset,
                                                     check_gt_source)

DEGRADATIONS = ('realesrgan', 'bicubic')


def load_recipe(path: Optional[str]) -> Dict[str, dict]:
    """Degradation and kernel settings: Real-ESRGAN x4plus, or those of a training YAML."""
    if path is None:
        return {'degradation': dict(REALESRGAN_X4PLUS_DEGRADATION), 'kernels': dict(REALESRGAN_X4PLUS_KERNELS)}
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--opt '{path}' does not exist")
    with open(path) as recipe_file:
        recipe = yaml.safe_load(recipe_file)
    train_opt = (recipe.get('datasets') or {}).get('train')
    if train_opt is None:
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
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise IOError(f"cannot read image '{path}'")
    return img.astype(np.float32) / 255.0


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


def make_test_pairs(*, hr: str, out: str, degradation_name: str, scale: int, seed: int,
                    recipe_path: Optional[str] = None) -> List[str]:
    """Write the pairs; returns the image names. ``realesrgan`` degrades every image (a recipe's ``bicubic_prob`` is
    set to 0: ``bicubic`` is the way to clean pairs); its other settings, ``second_order_prob`` included, apply."""
    if degradation_name not in DEGRADATIONS:
        raise ValueError(f'--degradation must be one of {DEGRADATIONS}, got {degradation_name!r}')
    recipe = load_recipe(recipe_path)
    recipe['degradation']['bicubic_prob'] = 0.0
    dataset_opt = {'name': 'make_test_pairs', 'dataroot_gt': hr, 'io_backend': {'type': 'disk'},
                   'use_hflip': False, 'use_rot': False, **recipe['kernels']}
    check_gt_source(dataset_opt)
    kernel_source = LPNSRRealESRGANDataset(dataset_opt)  # its image list and kernel sampler, not its crops
    degradation = SecondOrderDegradation(opt=recipe['degradation'], scale=scale)
    os.makedirs(os.path.join(out, 'gt'), exist_ok=True)
    os.makedirs(os.path.join(out, 'lq'), exist_ok=True)
    names = []
    for index, gt_path in enumerate(kernel_source.paths):
        set_random_seed(seed + index)
        gt = mod_crop(read_bgr01(gt_path), scale)
        if degradation_name == 'bicubic':
            lq = bicubic_lq(gt, scale)
        else:
            if min(gt.shape[:2]) < degradation.min_gt_size():
                raise ValueError(f"'{gt_path}' is {gt.shape[0]}x{gt.shape[1]}; the realesrgan degradation needs "
                                 f'sides of at least {degradation.min_gt_size()} px')
            lq = realesrgan_lq(gt, degradation=degradation, kernels=kernel_source.sample_kernels())
        name = os.path.splitext(os.path.relpath(gt_path, hr))[0].replace(os.sep, '_') + '.png'
        write_png(os.path.join(out, 'gt', name), (gt * 255.0).round().astype(np.uint8))
        write_png(os.path.join(out, 'lq', name), lq)
        names.append(name)
    return names
