"""The channel-first Swin: the official shifted-window mask rule, its cache, and attention numerics."""
from __future__ import annotations

import pytest
import torch

from lpnsr_arch.archs import swin
from lpnsr_arch.archs.swin import SwinBlock, official_shift_mask, build_official_shift_mask


def literal_official_rule(height, width, window, shift):
    """The spec's description executed step by step: labels written per row slice on a (1, 1, H, W) map whose
    channel axis swallowed the first slice, then windows flattened column-major."""
    img = torch.zeros(1, 1, height, width)
    slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    count = 0
    for a in slices:
        for b in slices:
            img[:, a, b, :] = count
            count += 1
    win = img.view(1, 1, height // window, window, width // window, window).permute(0, 2, 4, 3, 5, 1)
    win = win.reshape(-1, window, window, 1).permute(0, 2, 3, 1).reshape(-1, window * window)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def test_mask_matches_the_literal_rule_at_several_sizes():
    for h, w in [(16, 16), (32, 16), (24, 40), (64, 64)]:
        torch.testing.assert_close(build_official_shift_mask(h, w, 8, 4), literal_official_rule(h, w, 8, 4),
                                   rtol=0, atol=0)


def test_mask_structure_differs_from_standard_swin():
    mask = build_official_shift_mask(16, 16, 8, 4)  # 2 x 2 windows
    assert mask[0].abs().sum() == 0 and mask[1].abs().sum() == 0  # first window-row: unmasked
    last = mask[2]
    col = torch.arange(64) % 8
    blocked = (col[:, None] < 4) != (col[None, :] < 4)
    assert torch.equal(last != 0, blocked)


def test_mask_is_cached_per_size_and_device():
    swin._cached_shift_mask.cache_clear()
    a = official_shift_mask(32, 32, 8, 4, torch.device('cpu'), torch.float32)
    b = official_shift_mask(32, 32, 8, 4, torch.device('cpu'), torch.float32)
    assert a is b
    block = SwinBlock(dim=32, resolution=32, num_heads=2, window_size=8, shift_size=4, mlp_ratio=2.0).eval()
    x = torch.randn(1, 32, 32, 32)
    with torch.no_grad():
        for _ in range(3):
            block(x)
    assert swin._cached_shift_mask.cache_info().misses == 1


def test_sdpa_attention_equals_explicit_softmax():
    torch.manual_seed(0)
    attn = swin.WindowAttention(dim=32, window_size=8, num_heads=2)
    attn.relative_position_bias_table.data.normal_()
    x = torch.randn(8, 64, 32)
    mask = build_official_shift_mask(16, 32, 8, 4)  # 8 windows
    with torch.no_grad():
        out = attn(x, mask=mask)
        q, k, v = attn.qkv(x).view(8, 64, 3, 2, 16).permute(2, 0, 3, 1, 4)
        logits = (q * 16**-0.5) @ k.transpose(-1, -2) + attn.position_bias()[None] + mask[:, None]
        ref = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(8, 64, 32))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('which', ['channel_first', 'swinir'])
def test_shifted_window_attention_takes_the_transposed_layout_of_cuda_kernels(monkeypatch, which):
    """CUDA's memory-efficient attention returns (B, H, N, d) stored as (B, N, H, d): a .view of it failed for a
    batch above 1 (training, batched tiles). Emulated here on the CPU: same values, the kernel's layout."""
    import torch.nn.functional as F
    from lpnsr_arch.archs.swin import WindowAttention, build_official_shift_mask
    from lpnsr_arch.archs.upsampler_arch import SwinIRWindowAttention
    torch.manual_seed(0)
    if which == 'channel_first':
        attention = WindowAttention(dim=16, window_size=4, num_heads=2)
    else:
        attention = SwinIRWindowAttention(dim=16, window_size=(4, 4), num_heads=2)
    mask = build_official_shift_mask(8, 8, 4, 2, torch.device('cpu'))  # (4 windows, 16, 16)
    x = torch.randn(2 * 4, 16, 16)  # a batch of 2 images of 4 windows
    expected = attention(x, mask)
    real = F.scaled_dot_product_attention

    def transposed_layout(*args, **kwargs):
        return real(*args, **kwargs).transpose(1, 2).contiguous().transpose(1, 2)

    monkeypatch.setattr(F, 'scaled_dot_product_attention', transposed_layout)
    torch.testing.assert_close(attention(x, mask), expected, atol=1e-6, rtol=0)


def test_masks_above_the_cache_limit_are_built_per_call_and_not_kept():
    swin._cached_shift_mask.cache_clear()
    side = int((swin.SHIFT_MASK_CACHE_BYTES / (4 * 16)) ** 0.5) // 4 * 4 + 4  # window 4, float32: just over
    mask = official_shift_mask(side, side, 4, 2, torch.device('cpu'), torch.float32)
    torch.testing.assert_close(mask, build_official_shift_mask(side, side, 4, 2, torch.device('cpu')))
    assert swin._cached_shift_mask.cache_info().currsize == 0
    official_shift_mask(16, 16, 4, 2, torch.device('cpu'), torch.float32)
    assert swin._cached_shift_mask.cache_info().currsize == 1
