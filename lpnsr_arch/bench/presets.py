"""Network configurations for benchmarks and tests, as options dicts that :meth:`LPNSRPipeline.from_options` takes.

* ``official``: the full-size official networks (``options/inference_lpnsr_official.yml`` without checkpoints).
* ``small``: the official topology (4 UNet levels, VQ-f4 with mid attention, SwinIR ``nearest+conv``) at reduced
  widths, for CPU speed runs.
* ``tiny``: the smallest real registered networks (a weight-free pixel autoencoder, bicubic pre-upsampler, a
  2-level Swin-UNet), for tests; LR sizes must be multiples of 16.

Without ``path`` entries the weights are random (seed them with ``torch.manual_seed`` before building).
"""
from __future__ import annotations

import copy
from typing import Dict

from lpnsr_arch.pipeline import load_options
from lpnsr_arch.weights import resolve_project_file

__all__ = ['OFFICIAL_OPTIONS_PATH', 'official_options', 'small_options', 'tiny_options', 'preset_options', 'PRESETS']

OFFICIAL_OPTIONS_PATH = 'options/inference_lpnsr_official.yml'  # the project's own file (repository or installed data)

_DIFFUSION_V3 = {'num_timesteps': 4, 'kappa': 2.0, 'min_noise_level': 0.2, 'etas_end': 0.99, 'eta_power': 0.3}


def official_options() -> Dict:
    """The official full-size configuration with no checkpoints (random weights)."""
    options = load_options(resolve_project_file(OFFICIAL_OPTIONS_PATH, OFFICIAL_OPTIONS_PATH, current_folder=False))
    options.pop('path', None)
    return options


def _swin_unet(*, model_channels: int, channel_mult, num_res_blocks, attention_resolutions, swin_embed_dim: int,
               num_head_channels: int, image_size: int, latent_channels: int) -> Dict:
    return {
        'image_size': image_size, 'in_channels': latent_channels, 'out_channels': latent_channels,
        'model_channels': model_channels, 'channel_mult': list(channel_mult), 'num_res_blocks': list(num_res_blocks),
        'attention_resolutions': list(attention_resolutions), 'swin_embed_dim': swin_embed_dim,
        'num_head_channels': num_head_channels, 'window_size': 8, 'lq_size': image_size
    }


def small_options() -> Dict:
    """Official topology, reduced widths (LR sizes: multiples of 64, as the official models)."""
    unet = _swin_unet(model_channels=32, channel_mult=(1, 2, 2, 4), num_res_blocks=(1, 1, 1, 1),
                      attention_resolutions=(64, 32, 16, 8), swin_embed_dim=32, num_head_channels=16, image_size=64,
                      latent_channels=3)
    ddconfig = {
        'double_z': False, 'z_channels': 3, 'resolution': 256, 'in_channels': 3, 'out_ch': 3, 'ch': 32,
        'ch_mult': [1, 2, 4], 'num_res_blocks': 1, 'attn_resolutions': [], 'dropout': 0.0
    }
    return {
        'name': 'LPNSR_small_random',
        'network_upsampler': {
            'type': 'LPNSRSwinIR', 'upscale': 4, 'img_size': 64, 'window_size': 8, 'depths': [2, 2],
            'embed_dim': 48, 'num_heads': [6, 6], 'mlp_ratio': 2.0, 'upsampler': 'nearest+conv',
            'resi_connection': '3conv'
        },
        'network_ae': {'type': 'LPNSRVQAutoencoder', 'ddconfig': ddconfig, 'n_embed': 512, 'embed_dim': 3},
        'network_unet': {'type': 'LPNSRResShiftUNet', **unet},
        'network_noise': {'type': 'LPNSRNoisePredictor', **unet},
        'diffusion': dict(_DIFFUSION_V3),
        'inference': {'tile': 256, 'tile_overlap': 128},
    }


def tiny_options(*, with_noise_predictor: bool = True) -> Dict:
    """The smallest real networks: pixel autoencoder (factor 4, 48 latent channels), bicubic, 2-level Swin-UNet."""
    unet = _swin_unet(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1), attention_resolutions=(16, ),
                      swin_embed_dim=32, num_head_channels=16, image_size=16, latent_channels=48)
    options = {
        'name': 'LPNSR_tiny_random',
        'network_upsampler': {'type': 'LPNSRBicubicUpsampler', 'scale': 4},
        'network_ae': {'type': 'LPNSRPixelAutoencoder', 'factor': 4},
        'network_unet': {'type': 'LPNSRResShiftUNet', **unet},
        'diffusion': dict(_DIFFUSION_V3),
        'inference': {'tile': 32, 'tile_overlap': 16, 'pad_mode': 'multiple'},
    }
    if with_noise_predictor:
        options['network_noise'] = {'type': 'LPNSRNoisePredictor', **unet}
    return options


PRESETS = {'official': official_options, 'small': small_options, 'tiny': tiny_options}


def preset_options(name: str) -> Dict:
    """The options dict of preset ``name`` (a fresh copy)."""
    if name not in PRESETS:
        raise KeyError(f'unknown preset {name!r}; expected one of {sorted(PRESETS)}')
    return copy.deepcopy(PRESETS[name]())
