"""BasicSR's RealESRGANDataset with a configurable crop/pad size, an image-folder mode and clear input errors.

Upstream hard-codes the 400x400 crop/pad inside ``__getitem__`` and needs a ``meta_info`` file for the disk backend.
:class:`LPNSRRealESRGANDataset` keeps upstream's option parsing (``__init__``: kernel settings, LMDB keys, meta_info)
and its building blocks (``FileClient``, ``augment``, ``random_mixed_kernels``, ``circular_lowpass_kernel``), and only
re-assembles ``__getitem__`` around an option ``crop_pad_size`` (default 400, as upstream).
"""
from __future__ import annotations

import math
import os
import random
from typing import Dict

import cv2
import numpy as np
import torch

from basicsr.data.degradations import circular_lowpass_kernel, random_mixed_kernels
from basicsr.data.realesrgan_dataset import RealESRGANDataset
from basicsr.data.transforms import augment
from basicsr.utils import FileClient, imfrombytes, img2tensor
from basicsr.utils.registry import DATASET_REGISTRY

from lpnsr_arch.data.sources import check_data_sources, scan_image_folder

DEFAULT_CROP_PAD_SIZE = 400
KERNEL_SIZE = 21  # every kernel is padded to 21x21, as upstream
KERNEL_SIZES = tuple(2 * v + 1 for v in range(3, 11))  # 7, 9, ..., 21

#: Real-ESRGAN x4plus kernel settings (the ``datasets.train`` keys RealESRGANDataset reads).
REALESRGAN_X4PLUS_KERNELS: Dict[str, object] = {
    'blur_kernel_size': 21, 'kernel_list': ['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso',
                                            'plateau_aniso'],
    'kernel_prob': [0.45, 0.25, 0.12, 0.03, 0.12, 0.03], 'sinc_prob': 0.1, 'blur_sigma': [0.2, 3],
    'betag_range': [0.5, 4], 'betap_range': [1, 2],
    'blur_kernel_size2': 21, 'kernel_list2': ['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso',
                                              'plateau_aniso'],
    'kernel_prob2': [0.45, 0.25, 0.12, 0.03, 0.12, 0.03], 'sinc_prob2': 0.1, 'blur_sigma2': [0.2, 1.5],
    'betag_range2': [0.5, 4], 'betap_range2': [1, 2],
    'final_sinc_prob': 0.8,
}


def crop_or_pad(img: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad (bottom/right) to at least ``size`` and random-crop to ``size`` x ``size``; (H,W,C) array."""
    height, width = img.shape[0:2]
    if height < size or width < size:
        img = cv2.copyMakeBorder(img, 0, max(0, size - height), 0, max(0, size - width), cv2.BORDER_REFLECT_101)
    height, width = img.shape[0:2]
    top = random.randint(0, height - size)
    left = random.randint(0, width - size)
    return img[top:top + size, left:left + size, ...]


@DATASET_REGISTRY.register()
class LPNSRRealESRGANDataset(RealESRGANDataset):
    """RealESRGANDataset (same options) plus:

    * ``crop_pad_size`` (int, default 400): side of the GT patch handed to the degradation;
    * ``dataroot_gt`` may be a plain image folder: without ``meta_info`` it is scanned recursively;
    * a missing folder, a missing meta_info file or an empty folder/LMDB raises an error naming the path.

    Returns dicts ``{'gt': (3,S,S) float32 in [0,1] RGB, 'kernel1', 'kernel2', 'sinc_kernel': (21,21), 'gt_path'}``.
    """

    def __init__(self, opt: dict) -> None:
        if opt.get('dataroot_gt') is None:
            raise KeyError(f"dataset '{opt.get('name')}': option dataroot_gt (the HR images) is missing")
        check_data_sources(opt)
        for key in ('use_hflip', 'use_rot'):
            if not isinstance(opt.get(key), bool):
                raise KeyError(f"dataset '{opt.get('name')}': option {key} (true or false) is required, "
                               f'got {opt.get(key)!r}')
        self.crop_pad_size = int(opt.get('crop_pad_size', DEFAULT_CROP_PAD_SIZE))
        if self.crop_pad_size < KERNEL_SIZE:
            raise ValueError(f"dataset '{opt.get('name')}': crop_pad_size must be >= {KERNEL_SIZE}, "
                             f'got {self.crop_pad_size}')
        scan_folder = opt['io_backend']['type'] == 'disk' and opt.get('meta_info') is None
        # upstream reads the image list from meta_info; an empty file keeps its kernel/backend parsing intact
        super().__init__({**opt, 'meta_info': os.devnull} if scan_folder else opt)
        self.opt = opt
        if scan_folder:
            self.paths = [os.path.join(self.gt_folder, rel_path) for rel_path in scan_image_folder(self.gt_folder)]
        if not self.paths:
            raise ValueError(f"dataset '{opt.get('name')}': no image listed for dataroot_gt '{self.gt_folder}'")

    def _sample_blur_kernel(self, *, sinc_prob: float, kernel_list: list, kernel_prob: list, blur_sigma: list,
                            betag_range: list, betap_range: list) -> np.ndarray:
        """One random blur kernel (sinc or mixed Gaussian family), zero-padded to 21x21."""
        kernel_size = random.choice(KERNEL_SIZES)
        if np.random.uniform() < sinc_prob:
            omega_c = np.random.uniform(np.pi / 3 if kernel_size < 13 else np.pi / 5, np.pi)
            kernel = circular_lowpass_kernel(omega_c, kernel_size, pad_to=False)
        else:
            kernel = random_mixed_kernels(kernel_list, kernel_prob, kernel_size, blur_sigma, blur_sigma,
                                          [-math.pi, math.pi], betag_range, betap_range, noise_range=None)
        pad = (KERNEL_SIZE - kernel_size) // 2
        return np.pad(kernel, ((pad, pad), (pad, pad)))

    def sample_kernels(self) -> Dict[str, torch.Tensor]:
        """The three kernels of one sample: ``kernel1``, ``kernel2`` and ``sinc_kernel``, each (21,21) float32."""
        kernel1 = self._sample_blur_kernel(
            sinc_prob=self.sinc_prob, kernel_list=self.kernel_list, kernel_prob=self.kernel_prob,
            blur_sigma=self.blur_sigma, betag_range=self.betag_range, betap_range=self.betap_range)
        kernel2 = self._sample_blur_kernel(
            sinc_prob=self.sinc_prob2, kernel_list=self.kernel_list2, kernel_prob=self.kernel_prob2,
            blur_sigma=self.blur_sigma2, betag_range=self.betag_range2, betap_range=self.betap_range2)
        if np.random.uniform() < self.final_sinc_prob:
            omega_c = np.random.uniform(np.pi / 3, np.pi)
            sinc_kernel = torch.FloatTensor(
                circular_lowpass_kernel(omega_c, random.choice(KERNEL_SIZES), pad_to=KERNEL_SIZE))
        else:
            sinc_kernel = self.pulse_tensor.clone()
        return {'kernel1': torch.FloatTensor(kernel1), 'kernel2': torch.FloatTensor(kernel2),
                'sinc_kernel': sinc_kernel}

    def _read_gt(self, index: int) -> np.ndarray:
        """GT image ``index`` as (H,W,3) BGR float32 in [0,1]."""
        if self.file_client is None:
            backend_opt = dict(self.io_backend_opt)
            self.file_client = FileClient(backend_opt.pop('type'), **backend_opt)
        gt_path = self.paths[index]
        try:
            img_bytes = self.file_client.get(gt_path, 'gt')
        except (IOError, OSError) as error:
            raise IOError(f"dataset '{self.opt.get('name')}': cannot read GT image '{gt_path}': {error}") from error
        img = imfrombytes(img_bytes, float32=True)
        if img is None or img.ndim != 3:
            raise ValueError(f"dataset '{self.opt.get('name')}': '{gt_path}' is not a readable colour image")
        return img

    def __getitem__(self, index: int) -> dict:
        img_gt = augment(self._read_gt(index), self.opt['use_hflip'], self.opt['use_rot'])
        img_gt = crop_or_pad(img_gt, self.crop_pad_size)
        item = {'gt': img2tensor([img_gt], bgr2rgb=True, float32=True)[0], 'gt_path': self.paths[index]}
        item.update(self.sample_kernels())
        return item
