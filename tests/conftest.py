"""Shared fixtures: tiny network configurations and the location of the reference material (if present)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import lpnsr_arch  # noqa: E402,F401  (shim before any basicsr import in the tests)

# tiny networks gain nothing from threads, and oversubscribed OpenMP threads stall badly on a busy 2-core machine
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('LPNSR_SHARED', REPO_ROOT.parent / 'shared'))

TINY_UNET = dict(image_size=16, in_channels=3, model_channels=32, out_channels=3, num_res_blocks=(1, 1),
                 attention_resolutions=(16, 8), channel_mult=(1, 2), num_head_channels=16, swin_embed_dim=32,
                 window_size=8, mlp_ratio=2.0, lq_size=16)
TINY_VQ = dict(ddconfig=dict(double_z=False, z_channels=3, resolution=64, in_channels=3, out_ch=3, ch=32,
                             ch_mult=[1, 2, 4], num_res_blocks=1, attn_resolutions=[], dropout=0.0,
                             padding_mode='zeros'), n_embed=64, embed_dim=3)
SMALL_DIFFUSION = dict(num_timesteps=4, kappa=2.0, eta_schedule='exponential', eta_power=0.3, min_noise_level=0.2,
                       etas_end=0.99, normalize_input=True, latent_flag=True)


@pytest.fixture
def shared_dir() -> Path:
    """The read-only reference folder (``../shared``); tests needing it are skipped when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f'reference material not found at {SHARED}')
    return SHARED


@pytest.fixture
def tiny_unet_kwargs() -> dict:
    return dict(TINY_UNET)


@pytest.fixture
def tiny_vq_kwargs() -> dict:
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY_VQ.items()}


@pytest.fixture
def self_ensemble_calls(monkeypatch) -> list:
    """The ``self_ensemble`` flag of every ``LPNSRPipeline.pre_upsample`` call of the test, in order (the calls
    still run)."""
    from lpnsr_arch.pipeline import LPNSRPipeline
    calls = []
    original = LPNSRPipeline.pre_upsample

    def recording(self, lq, *, upsampler_precision='fp32', self_ensemble=False):
        calls.append(self_ensemble)
        return original(self, lq, upsampler_precision=upsampler_precision, self_ensemble=self_ensemble)

    monkeypatch.setattr(LPNSRPipeline, 'pre_upsample', recording)
    return calls
