"""Wavelet and AdaIN colour correction (lpnsr_arch/color.py)."""
import numpy as np
import pytest
import torch
from scipy import ndimage

import lpnsr_arch  # noqa: F401
from lpnsr_arch.color import adain_color_fix, wavelet_blur, wavelet_color_fix, wavelet_decomposition


def _numpy_blur(image: np.ndarray, dilation: int) -> np.ndarray:
    """Independent reference: dilated binomial kernel, edge replication, one channel at a time."""
    kernel = np.zeros((2 * dilation + 1, 2 * dilation + 1))
    taps = np.array([1.0, 2.0, 1.0])
    kernel[::dilation, ::dilation] = np.outer(taps, taps) / 16
    return np.stack([ndimage.correlate(channel, kernel, mode='nearest') for channel in image])


def test_blur_matches_an_independent_reference():
    image = torch.rand(1, 3, 40, 37, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for dilation in (1, 2, 8, 16):
        expected = _numpy_blur(image[0].numpy(), dilation)
        np.testing.assert_allclose(wavelet_blur(image, dilation)[0].numpy(), expected, atol=1e-12)


def test_decomposition_sums_back_and_a_constant_has_no_high_frequencies():
    image = torch.rand(2, 3, 33, 48)
    high, low = wavelet_decomposition(image, levels=5)
    torch.testing.assert_close(high + low, image, atol=1e-5, rtol=0)
    expected_low = image[0].double().numpy()  # the low band: five blurs at dilations 1, 2, 4, 8, 16 (spec)
    for dilation in (1, 2, 4, 8, 16):
        expected_low = _numpy_blur(expected_low, dilation)
    np.testing.assert_allclose(low[0].numpy(), expected_low, atol=1e-5)
    flat_high, flat_low = wavelet_decomposition(torch.full((1, 3, 20, 20), 0.3), levels=5)
    assert flat_high.abs().max() < 1e-6
    torch.testing.assert_close(flat_low, torch.full_like(flat_low, 0.3))


def test_wavelet_fix_removes_a_colour_shift_and_keeps_detail():
    reference = 0.25 + 0.5 * torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    shifted = reference + torch.tensor([0.2, -0.1, 0.05]).view(1, 3, 1, 1)
    fixed = wavelet_color_fix(shifted, reference)
    torch.testing.assert_close(fixed, reference, atol=1e-5, rtol=0)
    assert (shifted - reference).abs().mean() > 0.1  # the shift was real


def test_wavelet_fix_output_is_clamped_and_shapes_are_checked():
    out = wavelet_color_fix(torch.rand(1, 3, 16, 16) * 3, torch.rand(1, 3, 16, 16))
    assert out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match='one shape'):
        wavelet_color_fix(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        wavelet_blur(torch.rand(3, 16, 16), 1)


def test_adain_matches_reference_statistics():
    sr = 0.2 + 0.1 * torch.rand(1, 3, 32, 32)
    reference = 0.3 + 0.4 * torch.rand(1, 3, 16, 16)
    fixed = adain_color_fix(sr, reference)
    torch.testing.assert_close(fixed.mean(dim=(2, 3)), reference.mean(dim=(2, 3)), atol=1e-4, rtol=0)
    torch.testing.assert_close(fixed.std(dim=(2, 3), correction=0), reference.std(dim=(2, 3), correction=0),
                               atol=1e-3, rtol=0)


def test_strips_give_the_same_result_as_one_piece():
    from lpnsr_arch.color import wavelet_color_fix
    generator = torch.Generator().manual_seed(0)
    sr = torch.rand(1, 3, 300, 90, generator=generator)
    ref = torch.rand(1, 3, 300, 90, generator=generator)
    whole = wavelet_color_fix(sr, ref, strip=None)
    torch.testing.assert_close(wavelet_color_fix(sr, ref, strip=64), whole, rtol=0, atol=1e-6)
    high, _ = wavelet_decomposition(sr)
    _, low = wavelet_decomposition(ref)
    torch.testing.assert_close(whole, (high + low).clamp(0, 1), rtol=0, atol=1e-6)
