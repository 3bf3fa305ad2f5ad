"""Tile planning and Gaussian blending (lpnsr_arch/tiling.py)."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lpnsr_arch.tiling import blend_weights, gaussian_kernel_1d, plan_tiles, process_tiled, tile_starts


@pytest.mark.parametrize('length, tile, stride, expected', [
    (256, 256, 128, [0]),
    (100, 256, 128, [0]),
    (512, 256, 128, [0, 128, 256]),
    (300, 256, 128, [0, 44]),
    (600, 256, 200, [0, 200, 344]),
])
def test_official_tile_starts(length, tile, stride, expected):
    assert tile_starts(length, tile, stride) == expected


def test_plan_is_row_major_and_covers_the_image():
    tiles = plan_tiles(96, 64, tile=32, overlap=16)
    assert [(t.top, t.left) for t in tiles[:4]] == [(0, 0), (0, 16), (0, 32), (16, 0)]
    covered = np.zeros((96, 64), bool)
    for t in tiles:
        covered[t.top:t.top + t.height, t.left:t.left + t.width] = True
    assert covered.all()
    with pytest.raises(ValueError, match='tile_overlap'):
        plan_tiles(96, 64, tile=32, overlap=32)


@pytest.mark.parametrize('size', [1, 7, 64, 1024])
def test_kernel_matches_opencv_including_the_even_size_rule(size):
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    expected = cv2.getGaussianKernel(size + 1, sigma, cv2.CV_64F)[1:, 0] if size % 2 == 0 else \
        cv2.getGaussianKernel(size, sigma, cv2.CV_64F)[:, 0]
    np.testing.assert_allclose(gaussian_kernel_1d(size).numpy(), expected, rtol=1e-12)
    assert gaussian_kernel_1d(size) is gaussian_kernel_1d(size)  # cached


def test_blend_weights_are_the_outer_product():
    weight = blend_weights(8, 12)
    assert weight.shape == (1, 1, 8, 12)
    torch.testing.assert_close(weight[0, 0], torch.outer(gaussian_kernel_1d(8), gaussian_kernel_1d(12)))


def _nearest_x2(tiles: torch.Tensor, _) -> torch.Tensor:
    return F.interpolate(tiles * 2 - 0.5, scale_factor=2, mode='nearest')


@pytest.mark.parametrize('tile_batch', [1, 4, 100])
def test_pointwise_function_is_seamless(tile_batch):
    image = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    tiled = process_tiled(image, _nearest_x2, tile=16, overlap=6, scale=2, tile_batch=tile_batch, exact=True)
    assert tiled.dtype == torch.float64 and tiled.shape == (2, 3, 80, 112)
    torch.testing.assert_close(tiled, _nearest_x2(image, None).double(), atol=1e-12, rtol=0)


def test_tile_function_sees_tile_major_batches_and_wrong_shapes_are_reported():
    seen = []

    def record(tiles, group):
        seen.append((tiles.shape[0], [t.index for t in group]))
        return _nearest_x2(tiles, group)

    process_tiled(torch.rand(3, 1, 32, 32), record, tile=16, overlap=8, scale=2, tile_batch=4)
    assert seen == [(12, [0, 1, 2, 3]), (12, [4, 5, 6, 7]), (3, [8])]
    with pytest.raises(ValueError, match='tile function returned'):
        process_tiled(torch.rand(1, 1, 32, 32), lambda t, g: t, tile=16, overlap=8, scale=2)
