"""The channel-first Swin: the official shifted-window mask rule, its cache, and attention numerics."""
from __future__ import annotations

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
