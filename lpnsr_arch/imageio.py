"""Image files for the command line: grey, RGB and RGBA, 8- and 16-bit, to and from float tensors in [0, 1].

:func:`read_image` returns an RGB float tensor plus an :class:`ImageRecord` (what the file was: mode, bit depth,
alpha plane); :func:`restore_mode` turns the SR result back into the file's mode (the alpha plane upscaled with
bicubic), and :func:`write_image` writes it with the original bit depth (or 8-bit for JPEG).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['ImageRecord', 'ImageReadError', 'read_image', 'restore_mode', 'write_image', 'IMAGE_EXTENSIONS']

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
# the formats OpenCV writes with 16 bits per channel (others would clip the values to 8 bits: a white image)
SIXTEEN_BIT_EXTENSIONS = ('.png', '.tif', '.tiff', '.ppm', '.pgm')
EXIF_ORIENTATION_TAG = 0x0112
# OpenCV's IMREAD_UNCHANGED decode already turns these upright (libtiff applies the orientation tag); the others
# (JPEG, PNG, WebP) it returns as stored
ORIENTED_BY_OPENCV = ('.tif', '.tiff')


class ImageReadError(ValueError):
    """An input file that is not a readable image (names the file and the reason)."""


@dataclass(frozen=True)
class ImageRecord:
    """What an input file held.

    Attributes:
        path: the file.
        mode: ``'L'`` (grey), ``'LA'`` (grey + alpha: a PNG of that colour type), ``'RGB'`` or ``'RGBA'``.
        bit_depth: 8 or 16.
        alpha: the alpha plane as (1, 1, H, W) float in [0, 1] for LA and RGBA, else None.
    """
    path: Path
    mode: str
    bit_depth: int
    alpha: Optional[Tensor] = None


def _to_unit_float(array: np.ndarray, path: Path) -> Tuple[np.ndarray, int]:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0, 8
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0, 16
    raise ImageReadError(f'{path}: unsupported pixel type {array.dtype} (expected 8- or 16-bit integers)')


def exif_orientation(path: Path) -> int:
    """The EXIF orientation tag of ``path`` (1 to 8; 1, upright, when the file has none or PIL cannot read it)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            value = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError):
        return 1  # PIL refuses images above ~179 MP (OpenCV decodes them): no tag is read then
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a decoded (H, W[, C]) array upright by its EXIF ``orientation`` (1 to 8), as a photo viewer shows it."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(array, k=-1)
    if orientation == 7:
        return array[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(array, k=1)
    return array


PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
PNG_GREY_ALPHA = 4
"""The PNG colour type of grey + alpha (byte 25 of the file: the IHDR chunk's colour type), which OpenCV decodes
as BGRA."""


def _is_grey_alpha_png(raw: np.ndarray) -> bool:
    return raw.size > 25 and raw[:8].tobytes() == PNG_SIGNATURE and int(raw[25]) == PNG_GREY_ALPHA


def read_image(path: str | Path) -> Tuple[Tensor, ImageRecord]:
    """Read ``path`` as an RGB float tensor (1, 3, H, W) in [0, 1] and an :class:`ImageRecord`.

    Grey images are repeated to 3 channels; the alpha of RGBA and grey + alpha images goes into the record (a
    grey + alpha PNG keeps its grey mode: ``'LA'``). An EXIF orientation tag
    (phone photos) is applied, as ``cv2.imread`` and BasicSR's reader do.

    Raises:
        ImageReadError: the file is missing, empty, not an image, or of an unsupported layout.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f'{path}: no such file')
    raw = np.fromfile(str(path), dtype=np.uint8)
    if raw.size == 0:
        raise ImageReadError(f'{path}: the file is empty')
    array = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ImageReadError(f'{path}: not a readable image (OpenCV could not decode it)')
    if path.suffix.lower() not in ORIENTED_BY_OPENCV:
        array = apply_orientation(array, exif_orientation(path))
    unit, bit_depth = _to_unit_float(array, path)
    alpha = None
    if unit.ndim == 2 or (unit.ndim == 3 and unit.shape[2] == 1):
        mode = 'L'
        grey = unit.reshape(unit.shape[0], unit.shape[1])
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
    elif unit.ndim == 3 and unit.shape[2] == 3:
        mode = 'RGB'
        rgb = unit[:, :, ::-1]
    elif unit.ndim == 3 and unit.shape[2] == 4:
        mode = 'LA' if _is_grey_alpha_png(raw) else 'RGBA'
        rgb = np.repeat(unit[:, :, :1], 3, axis=2) if mode == 'LA' else unit[:, :, 2::-1]
        alpha = torch.from_numpy(np.ascontiguousarray(unit[:, :, 3]))[None, None]
    else:
        raise ImageReadError(f'{path}: unsupported layout {array.shape} (expected grey, RGB or RGBA)')
    tensor = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None]
    return tensor, ImageRecord(path=path, mode=mode, bit_depth=bit_depth, alpha=alpha)


def restore_mode(sr01: Tensor, record: ImageRecord, scale: int) -> Tensor:
    """Give the SR image (1, 3, sH, sW) in [0, 1] the input's mode: (1, C, sH, sW) with C = 1 (L), 2 (LA), 3 (RGB)
    or 4 (RGBA).

    Grey: the mean of the three channels. LA and RGBA: the alpha plane upscaled by bicubic (clamped to [0, 1]) is
    appended.
    """
    image = sr01.mean(dim=1, keepdim=True) if record.mode in ('L', 'LA') else sr01
    if record.mode in ('LA', 'RGBA'):
        if record.alpha is None:
            raise ValueError(f'{record.path}: {record.mode} record without an alpha plane')
        alpha = F.interpolate(record.alpha.to(sr01), scale_factor=scale, mode='bicubic', align_corners=False)
        return torch.cat([image, alpha.clamp(0.0, 1.0)], dim=1)
    return image


def write_image(path: str | Path, image01: Tensor, bit_depth: int = 8) -> None:
    """Write (1, C, H, W) float ``image01`` in [0, 1] (C = 1 grey, 2 grey + alpha, 3 RGB or 4 RGBA) as ``bit_depth``
    8 or 16.

    16 bits need PNG, TIFF, PPM or PGM; JPEG holds no alpha: other requests, and anything OpenCV cannot encode,
    raise ``ValueError`` naming the file. Grey + alpha is written as an 8-bit grey + alpha PNG (by PIL: OpenCV
    writes no 2-channel image); in 16 bits or another format, as RGBA with equal colour channels. Parent folders are
    created.
    """
    path = Path(path)
    if image01.ndim != 4 or image01.shape[0] != 1 or image01.shape[1] not in (1, 2, 3, 4):
        raise ValueError(f'{path}: image must be shaped (1, C, H, W) with C in (1, 2, 3, 4), got '
                         f'{tuple(image01.shape)}')
    if bit_depth not in (8, 16):
        raise ValueError(f'{path}: bit_depth must be 8 or 16, got {bit_depth}')
    suffix = path.suffix.lower()
    if bit_depth == 16 and suffix not in SIXTEEN_BIT_EXTENSIONS:
        raise ValueError(f'{path}: {suffix or "this format"} cannot store 16-bit images; use one of '
                         f'{", ".join(SIXTEEN_BIT_EXTENSIONS)}')
    if suffix in ('.jpg', '.jpeg') and image01.shape[1] in (2, 4):
        raise ValueError(f'{path}: JPEG cannot store alpha; use .png')
    max_value, dtype = (65535.0, np.uint16) if bit_depth == 16 else (255.0, np.uint8)
    array = image01[0].detach().float().clamp(0.0, 1.0).permute(1, 2, 0).cpu().numpy()
    array = np.round(array * max_value).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.shape[2] == 2:
        if bit_depth == 8 and suffix == '.png':
            _write_grey_alpha_png(path, array)
            return
        array = array[:, :, [0, 0, 0, 1]]
    if array.shape[2] == 3:
        array = array[:, :, ::-1]
    elif array.shape[2] == 4:
        array = array[:, :, [2, 1, 0, 3]]
    else:
        array = array[:, :, 0]
    try:
        ok, encoded = cv2.imencode(path.suffix or '.png', np.ascontiguousarray(array))
    except cv2.error as err:  # e.g. alpha in a PPM file
        raise ValueError(f'{path}: OpenCV cannot encode a {array.shape[2] if array.ndim == 3 else 1}-channel '
                         f'{bit_depth}-bit image as {path.suffix!r}: {str(err).strip().splitlines()[-1]}') from err
    if not ok:
        raise ValueError(f'{path}: OpenCV could not encode the image as {path.suffix!r}')
    encoded.tofile(str(path))


def _write_grey_alpha_png(path: Path, array: np.ndarray) -> None:
    """Write an (H, W, 2) uint8 grey + alpha array as a PNG of that colour type."""
    import io

    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format='PNG')  # (H, W, 2) uint8: mode LA
    path.write_bytes(buffer.getvalue())
