"""Tiny versions of the demo baseline recipes, pointed at generated images in a temporary folder (test helper)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict

import cv2
import numpy as np
import yaml
from skimage import data as skimage_data

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_OPTIONS = {'rrdbnet': REPO_ROOT / 'options' / 'demo' / 'train_rrdbnet_demo.yml',
                'swinir': REPO_ROOT / 'options' / 'demo' / 'train_swinir_demo.yml'}
TINY_NETWORKS: Dict[str, dict] = {
    'rrdbnet': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4},
    'swinir': {'type': 'SwinIR', 'upscale': 4, 'in_chans': 3, 'img_size': 16, 'window_size': 4, 'img_range': 1.0,
               'depths': [1], 'embed_dim': 8, 'num_heads': [1], 'mlp_ratio': 2, 'upsampler': 'pixelshuffledirect',
               'resi_connection': '1conv'},
}


def write_images(tmp_path: Path) -> Dict[str, Path]:
    """4 HR crops (96 px) for training, and one 100x100 / 25x25 validation pair (25 is not a multiple of the
    SwinIR window, so the padding in ``test()`` is exercised)."""
    astronaut = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    hr, gt, lq = tmp_path / 'hr', tmp_path / 'val' / 'gt', tmp_path / 'val' / 'lq'
    for folder in (hr, gt, lq):
        folder.mkdir(parents=True)
    for index in range(4):
        cv2.imwrite(str(hr / f'hr{index}.png'), astronaut[100 * index:100 * index + 96, 150:246])
    val_gt = np.ascontiguousarray(astronaut[300:400, 200:300])
    cv2.imwrite(str(gt / 'val0.png'), val_gt)
    cv2.imwrite(str(lq / 'val0.png'), cv2.resize(val_gt, (25, 25), interpolation=cv2.INTER_AREA))
    return {'hr': hr, 'val_gt': gt, 'val_lq': lq}


def tiny_recipe(net: str, model_type: str, folders: Dict[str, Path], *, name: str, total_iter: int = 4) -> dict:
    """The demo recipe of ``net`` shrunk to a few CPU seconds: tiny networks, 80 px crops, batch 2."""
    with open(DEMO_OPTIONS[net]) as recipe_file:
        opt = yaml.safe_load(recipe_file)
    opt = copy.deepcopy(opt)
    opt.update(name=name, model_type=model_type, num_gpu=0, gt_size=64, network_g=dict(TINY_NETWORKS[net]))
    opt['network_d']['num_feat'] = 8
    train = opt['datasets']['train']
    train.update(dataroot_gt=str(folders['hr']), crop_pad_size=80, gt_size=64, batch_size_per_gpu=2,
                 num_worker_per_gpu=0, persistent_workers=False, dataset_enlarge_ratio=1)
    opt['datasets']['val'].update(dataroot_gt=str(folders['val_gt']), dataroot_lq=str(folders['val_lq']))
    opt['train'].update(total_iter=total_iter, ema_decay=0.5)
    opt['train']['scheduler']['milestones'] = [total_iter]
    if model_type == 'LPNSRRealESRNetModel':
        for key in ('optim_d', 'gan_opt', 'net_d_iters', 'net_d_init_iters'):
            opt['train'].pop(key)
        opt.pop('network_d')
    opt['val'].update(val_freq=total_iter, save_img=True)
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    return opt


def write_recipe(opt: dict, path: Path) -> str:
    with open(path, 'w') as recipe_file:
        yaml.safe_dump(opt, recipe_file, sort_keys=False)
    return str(path)
