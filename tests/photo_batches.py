"""Small training batches cut from scikit-image's sample photographs (shared by the model tests)."""
from __future__ import annotations

from typing import Dict, Tuple

import cv2
import numpy as np
import torch
from skimage import data as skdata


def photo_batch(photo: str, *, num: int, gt_size: int, row_step: int, cols: Tuple[int, int]) -> Dict[str, torch.Tensor]:
    """``num`` GT crops of ``skimage.data.<photo>()`` (128 px tall, rows ``row_step * i``, columns ``cols``) resized to
    ``gt_size`` in [0, 1], and their bicubic x4 downscales: ``{'gt': (num,3,s,s), 'lq': (num,3,s/4,s/4)}``."""
    image = getattr(skdata, photo)().astype(np.float32) / 255.0
    gts = [
        cv2.resize(image[row_step * i:row_step * i + 128, cols[0]:cols[1]], (gt_size, gt_size),
                   interpolation=cv2.INTER_AREA) for i in range(num)
    ]
    gt = torch.from_numpy(np.stack(gts)).permute(0, 3, 1, 2).contiguous()
    lq = torch.nn.functional.interpolate(gt, scale_factor=0.25, mode='bicubic', antialias=True).clamp(0, 1)
    return {'gt': gt, 'lq': lq}
