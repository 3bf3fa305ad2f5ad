"""test.py (BasicSR's test_pipeline) with LPNSRModel: options/test_lpnsr_demo_x4.yml, and an end-to-end run of the
entry point on a tiny generated paired set with tiny random networks."""
from __future__ import annotations

import contextlib
import copy
import logging
import re
from pathlib import Path
from typing import Dict, Iterator, List

import cv2
import numpy as np
import torch
import yaml
from skimage import data as skimage_data

import lpnsr_arch  # noqa: F401  (registers everything; must come before basicsr)
from lpnsr_arch import test as test_entry
from lpnsr_arch.weights import save_state_dict

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_OPTIONS = REPO_ROOT / 'options' / 'test_lpnsr_demo_x4.yml'
INFERENCE_OPTIONS = REPO_ROOT / 'options' / 'demo' / 'inference_lpnsr_demo.yml'

TINY_SWIN_UNET = dict(image_size=8, in_channels=48, out_channels=48, model_channels=32, channel_mult=[1],
                      num_res_blocks=[1], attention_resolutions=[], num_head_channels=16, swin_depth=1,
                      swin_embed_dim=32, window_size=4, lq_size=8, mlp_ratio=2.0)
TINY_UPSAMPLER = dict(type='LPNSRBicubicResidualRRDBNet', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1,
                      num_grow_ch=4)
GT_SIZES = {'img0': (64, 48), 'img1': (40, 56)}  # (height, width); LR 16x12 and 10x14 (not multiples of 8: padded)


def load_yaml(path: Path) -> dict:
    with open(path) as options_file:
        return yaml.safe_load(options_file)


def test_demo_test_options_use_the_inference_networks_and_the_shipped_weights() -> None:
    test_opt, inference = load_yaml(TEST_OPTIONS), load_yaml(INFERENCE_OPTIONS)
    from basicsr.utils.registry import MODEL_REGISTRY
    assert MODEL_REGISTRY.get(test_opt['model_type']).__name__ == 'LPNSRModel'
    assert test_opt['network_g'] == inference['network_noise']  # LPNSRModel's net_g is the noise predictor
    for key in ('network_unet', 'network_ae', 'network_upsampler', 'diffusion'):
        assert test_opt[key] == inference[key], key
    path = test_opt['path']
    assert path['pretrain_network_g'] == inference['path']['pretrain_network_noise']
    for name in ('unet', 'upsampler'):
        assert path[f'pretrain_network_{name}'] == inference['path'][f'pretrain_network_{name}']
    for key, value in path.items():
        if key.startswith('pretrain_network_'):
            assert (REPO_ROOT / value).is_file(), value
    assert test_opt['val']['seed'] == inference['inference']['seed']
    dataset = test_opt['datasets']['test_1']
    assert dataset['type'] == 'PairedImageDataset' and dataset['filename_tmpl'] == '{}x4'
    metrics = test_opt['val']['metrics']
    for name in ('psnr', 'ssim'):
        assert metrics[name]['crop_border'] == 4 and metrics[name]['test_y_channel'] is True


def write_pairs(root: Path) -> Dict[str, Path]:
    """Two GT crops of skimage's astronaut and their x4 area downscales named ``<name>x4.png`` (Set5's layout)."""
    astronaut = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    gt_dir, lq_dir = root / 'hr', root / 'lr_x4'
    gt_dir.mkdir(parents=True)
    lq_dir.mkdir(parents=True)
    for index, (name, (height, width)) in enumerate(GT_SIZES.items()):
        gt = np.ascontiguousarray(astronaut[80 * index + 100:80 * index + 100 + height, 180:180 + width])
        cv2.imwrite(str(gt_dir / f'{name}.png'), gt)
        cv2.imwrite(str(lq_dir / f'{name}x4.png'), cv2.resize(gt, (width // 4, height // 4), cv2.INTER_AREA))
    return {'gt': gt_dir, 'lq': lq_dir}


def save_tiny_networks(opt: dict, folder: Path) -> Dict[str, Path]:
    """Randomly initialised tiny networks for ``opt``'s keys: flat safetensors for the frozen ones, and a BasicSR
    ``net_g`` checkpoint (``params`` and ``params_ema``) for the noise predictor."""
    from basicsr.archs import build_network
    files = {}
    for index, key in enumerate(('network_upsampler', 'network_unet')):
        torch.manual_seed(10 + index)
        files[key] = folder / f'{key}.safetensors'
        save_state_dict(files[key], build_network(dict(opt[key])).state_dict())
    torch.manual_seed(12)
    net_g = build_network(dict(opt['network_g']))
    ema = {k: v * 0.5 if v.is_floating_point() else v for k, v in net_g.state_dict().items()}
    files['network_g'] = folder / 'net_g_latest.pth'
    torch.save({'params': net_g.state_dict(), 'params_ema': ema}, files['network_g'])
    return files


class RecordList(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def fresh_basicsr_logger() -> Iterator[logging.Logger]:
    """BasicSR's ``get_root_logger`` sets its handlers (and the log file) up once per process, at its first call: any
    earlier ``build_network`` or model leaves it without a file and at WARNING. Uninitialise it for the block, and
    restore it afterwards."""
    from basicsr.utils import logger as basicsr_logger
    log = logging.getLogger('basicsr')
    saved = (list(log.handlers), log.level, log.propagate, basicsr_logger.initialized_logger.pop('basicsr', None))
    log.handlers.clear()
    try:
        yield log
    finally:
        for handler in log.handlers:
            if handler not in saved[0]:
                handler.close()
        log.handlers[:] = saved[0]
        log.setLevel(saved[1])
        log.propagate = saved[2]
        basicsr_logger.initialized_logger.pop('basicsr', None)
        if saved[3] is not None:
            basicsr_logger.initialized_logger['basicsr'] = saved[3]


def test_test_py_runs_lpnsr_end_to_end_on_a_tiny_paired_set(tmp_path: Path) -> None:
    opt = copy.deepcopy(load_yaml(TEST_OPTIONS))
    opt.update(name='unit_test_lpnsr', num_gpu=0, network_g=dict(TINY_SWIN_UNET, type='LPNSRNoisePredictor'),
               network_unet=dict(TINY_SWIN_UNET, type='LPNSRResShiftUNet'), network_upsampler=dict(TINY_UPSAMPLER))
    folders = write_pairs(tmp_path / 'data')
    opt['datasets']['test_1'].update(name='tiny', dataroot_gt=str(folders['gt']), dataroot_lq=str(folders['lq']))
    files = save_tiny_networks(opt, tmp_path)
    opt['path'].update({f'pretrain_{key}': str(path) for key, path in files.items()})
    del opt['val']['metrics']['niqe']  # NIQE needs 96 px blocks: these images are smaller
    options_path = tmp_path / 'test_tiny.yml'
    options_path.write_text(yaml.safe_dump(opt, sort_keys=False))

    records = RecordList()
    with fresh_basicsr_logger() as log:  # after save_tiny_networks: build_network initialises BasicSR's logger
        log.addHandler(records)  # test_pipeline's get_root_logger keeps it (it only adds its own handlers)
        test_entry.main(['-opt', str(options_path)], root_path=str(tmp_path))

    results = tmp_path / 'results' / 'unit_test_lpnsr'
    for name, shape in GT_SIZES.items():
        image = cv2.imread(str(results / 'visualization' / 'tiny' / f'{name}x4_LPNSR_demo.png'))
        assert image is not None and image.shape == (*shape, 3), name
    assert any(f"from {files['network_g']} [params_ema]" in message for message in records.messages)
    logs = list(results.glob('test_unit_test_lpnsr_*.log'))
    assert len(logs) == 1
    for text in ('\n'.join(records.messages), logs[0].read_text()):
        assert 'Validation tiny' in text
        for metric in ('psnr', 'ssim'):
            match = re.search(rf'# {metric}: ([-+0-9.eE]+|nan|inf)', text)
            assert match and np.isfinite(float(match.group(1))), (metric, text[-500:])
