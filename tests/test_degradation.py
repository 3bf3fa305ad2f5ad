"""The shared second-order degradation and the LPNSRRealESRGANDataset (disk folder, meta_info, LMDB, errors)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List

import cv2
import pytest
import torch
from skimage import data as skimage_data

import lpnsr_arch  # noqa: F401
from basicsr.utils import USMSharp, set_random_seed
from basicsr.utils.lmdb_util import make_lmdb_from_imgs

from lpnsr_arch.data.degradation import (REALESRGAN_X4PLUS_DEGRADATION, SecondOrderDegradation, degrade_batch,
                                         validate_degradation_opt)
from lpnsr_arch.data.realesrgan_crop_dataset import REALESRGAN_X4PLUS_KERNELS, LPNSRRealESRGANDataset


def write_hr_images(folder: Path, *, count: int = 3, size: int = 100) -> List[str]:
    """``count`` crops of skimage's astronaut as PNGs; returns their file names."""
    folder.mkdir(parents=True, exist_ok=True)
    astronaut = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    names = []
    for index in range(count):
        name = f'img{index}.png'
        cv2.imwrite(str(folder / name), astronaut[40 * index:40 * index + size, 60 * index:60 * index + size])
        names.append(name)
    return names


def dataset_opt(root: str, **overrides) -> dict:
    opt = {'name': 'unit', 'dataroot_gt': root, 'io_backend': {'type': 'disk'}, 'use_hflip': True,
           'use_rot': False, 'crop_pad_size': 96, **REALESRGAN_X4PLUS_KERNELS}
    opt.update(overrides)
    return opt


def kernel_batch(dataset: LPNSRRealESRGANDataset, batch: int) -> Dict[str, torch.Tensor]:
    samples = [dataset.sample_kernels() for _ in range(batch)]
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


@pytest.fixture
def hr_folder(tmp_path: Path) -> Path:
    write_hr_images(tmp_path / 'hr')
    return tmp_path / 'hr'


def degrade_with_seed(seed: int, hr_folder: Path) -> torch.Tensor:
    set_random_seed(seed)
    dataset = LPNSRRealESRGANDataset(dataset_opt(str(hr_folder)))
    gt = torch.stack([dataset[i]['gt'] for i in range(2)])
    degradation = SecondOrderDegradation(opt=REALESRGAN_X4PLUS_DEGRADATION, scale=4)
    return degradation(gt, **kernel_batch(dataset, 2))[0]


def test_degradation_shapes_range_and_quantisation(hr_folder: Path) -> None:
    lq = degrade_with_seed(0, hr_folder)
    assert lq.shape == (2, 3, 24, 24)
    assert lq.dtype == torch.float32
    assert 0.0 <= lq.min() and lq.max() <= 1.0
    assert torch.allclose(lq * 255, (lq * 255).round(), atol=1e-4)
    assert lq.std() > 0.01  # an image, not a constant


def test_degradation_is_reproducible_with_a_seed(hr_folder: Path) -> None:
    first, again, other = (degrade_with_seed(seed, hr_folder) for seed in (3, 3, 4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_degradation_is_autocast_clean() -> None:
    degradation = SecondOrderDegradation(opt=REALESRGAN_X4PLUS_DEGRADATION, scale=4)
    pulse = torch.zeros(1, 21, 21)
    pulse[:, 10, 10] = 1
    with torch.autocast(device_type='cpu', dtype=torch.bfloat16):
        lq, clean = degradation(torch.rand(1, 3, 80, 80), pulse, pulse, pulse)
    assert clean.tolist() == [False]
    assert lq.dtype == torch.float32 and lq.shape == (1, 3, 20, 20)


@pytest.mark.parametrize('missing', ['jpeg_range2', 'second_blur_prob', 'resize_prob'])
def test_missing_degradation_key_is_named(missing: str) -> None:
    opt = dict(REALESRGAN_X4PLUS_DEGRADATION)
    opt.pop(missing)
    with pytest.raises(KeyError, match=missing):
        SecondOrderDegradation(opt=opt, scale=4)


def test_misspelt_degradation_key_names_the_expected_one() -> None:
    opt = dict(REALESRGAN_X4PLUS_DEGRADATION)
    opt['noise_rnage'] = opt.pop('noise_range')
    with pytest.raises(KeyError, match="'noise_range'"):
        validate_degradation_opt(opt)


@pytest.mark.parametrize('key, value', [('resize_range', [0.5]), ('gray_noise_prob', 1.5),
                                        ('resize_prob', [0.5, 0.5, 0.5])])
def test_bad_degradation_values_are_named(key: str, value) -> None:
    with pytest.raises(ValueError, match=key):
        validate_degradation_opt({**REALESRGAN_X4PLUS_DEGRADATION, key: value})


def test_too_small_gt_is_refused() -> None:
    degradation = SecondOrderDegradation(opt=REALESRGAN_X4PLUS_DEGRADATION, scale=4)
    pulse = torch.zeros(1, 21, 21)
    with pytest.raises(ValueError, match='at least'):
        degradation(torch.rand(1, 3, 32, 32), pulse, pulse, pulse)


def test_degrade_batch_crops_a_pair(hr_folder: Path) -> None:
    set_random_seed(0)
    dataset = LPNSRRealESRGANDataset(dataset_opt(str(hr_folder)))
    batch = {'gt': torch.stack([dataset[i]['gt'] for i in range(2)]), **kernel_batch(dataset, 2)}
    degradation = SecondOrderDegradation(opt=REALESRGAN_X4PLUS_DEGRADATION, scale=4)
    set_random_seed(1)
    pair = degrade_batch(degradation, batch, torch.device('cpu'), gt_size=64, usm_sharpener=USMSharp())
    assert pair.lq.shape == (2, 3, 16, 16) and pair.gt.shape == (2, 3, 64, 64) and pair.clean.shape == (2, )
    assert 0 <= pair.gt.min() and pair.gt.max() <= 1
    # the same crop of the plain and of the sharpened GT; the LR is made from the sharpened one
    set_random_seed(1)
    plain = degrade_batch(degradation, batch, torch.device('cpu'), gt_size=64)
    assert plain.gt_usm is None and torch.equal(plain.gt, pair.gt)
    sharpened_full = USMSharp()(batch['gt'])
    found = [(top, left) for top in range(33) for left in range(33)
             if torch.equal(sharpened_full[..., top:top + 64, left:left + 64], pair.gt_usm)]
    assert len(found) == 1 and torch.equal(batch['gt'][..., found[0][0]:found[0][0] + 64,
                                                       found[0][1]:found[0][1] + 64], pair.gt)
    assert not torch.equal(plain.lq, pair.lq)
    with pytest.raises(KeyError, match='kernel1'):
        degrade_batch(degradation, {'gt': batch['gt']}, torch.device('cpu'), gt_size=64)
    with pytest.raises(ValueError, match='smaller than gt_size 128: set the dataset.s crop_pad_size'):
        degrade_batch(degradation, batch, torch.device('cpu'), gt_size=128)


def test_dataset_scans_a_folder_and_crops_to_crop_pad_size(hr_folder: Path) -> None:
    dataset = LPNSRRealESRGANDataset(dataset_opt(str(hr_folder), crop_pad_size=80))
    assert len(dataset) == 3
    item = dataset[1]
    assert item['gt'].shape == (3, 80, 80)
    assert item['kernel1'].shape == item['kernel2'].shape == item['sinc_kernel'].shape == (21, 21)
    assert abs(float(item['kernel1'].sum()) - 1) < 1e-4


def test_dataset_pads_images_smaller_than_crop_pad_size(hr_folder: Path) -> None:
    assert LPNSRRealESRGANDataset(dataset_opt(str(hr_folder), crop_pad_size=128))[0]['gt'].shape == (3, 128, 128)


def test_dataset_reads_a_meta_info_list(hr_folder: Path, tmp_path: Path) -> None:
    meta = tmp_path / 'meta.txt'
    meta.write_text('img2.png\n')
    dataset = LPNSRRealESRGANDataset(dataset_opt(str(hr_folder), meta_info=str(meta)))
    assert [os.path.basename(p) for p in dataset.paths] == ['img2.png']


def test_dataset_reads_an_lmdb(hr_folder: Path, tmp_path: Path) -> None:
    names = sorted(os.listdir(hr_folder))
    lmdb_path = str(tmp_path / 'hr.lmdb')
    make_lmdb_from_imgs(str(hr_folder), lmdb_path, names, [os.path.splitext(n)[0] for n in names])
    dataset = LPNSRRealESRGANDataset(dataset_opt(lmdb_path, io_backend={'type': 'lmdb'}))
    assert len(dataset) == 3
    assert dataset[2]['gt'].shape == (3, 96, 96)


def test_dataset_errors_name_the_path(tmp_path: Path) -> None:
    missing = str(tmp_path / 'no_such_folder')
    with pytest.raises(FileNotFoundError, match='no_such_folder'):
        LPNSRRealESRGANDataset(dataset_opt(missing))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='holds no image'):
        LPNSRRealESRGANDataset(dataset_opt(str(tmp_path / 'empty')))
    with pytest.raises(FileNotFoundError, match='meta_nope.txt'):
        LPNSRRealESRGANDataset(dataset_opt(str(tmp_path / 'empty'), meta_info=str(tmp_path / 'meta_nope.txt')))
    empty_lmdb = tmp_path / 'empty.lmdb'
    empty_lmdb.mkdir()
    (empty_lmdb / 'data.mdb').write_bytes(b'')
    (empty_lmdb / 'meta_info.txt').write_text('')
    with pytest.raises(ValueError, match='empty.lmdb'):
        LPNSRRealESRGANDataset(dataset_opt(str(empty_lmdb), io_backend={'type': 'lmdb'}))


def test_bicubic_prob_mixes_in_clean_bicubic_downscales():
    import numpy as np
    import torch.nn.functional as F

    from lpnsr_arch.data.degradation import REALESRGAN_X4PLUS_DEGRADATION, SecondOrderDegradation
    gt = torch.rand(6, 3, 96, 96)
    kernel = torch.zeros(6, 21, 21)
    kernel[:, 10, 10] = 1
    clean = (F.interpolate(gt, size=(24, 24), mode='bicubic', antialias=True) * 255).round().clamp(0, 255) / 255
    always = SecondOrderDegradation(opt=dict(REALESRGAN_X4PLUS_DEGRADATION, bicubic_prob=1.0), scale=4)
    np.random.seed(0)
    lq, picked = always(gt, kernel, kernel, kernel)
    torch.testing.assert_close(lq, clean)
    assert picked.all()
    never = SecondOrderDegradation(opt=dict(REALESRGAN_X4PLUS_DEGRADATION), scale=4)
    np.random.seed(0)
    lq, picked = never(gt, kernel, kernel, kernel)
    assert (lq - clean).abs().max() > 0.01 and not picked.any()
    half = SecondOrderDegradation(opt=dict(REALESRGAN_X4PLUS_DEGRADATION, bicubic_prob=0.5), scale=4)
    np.random.seed(0)
    lq, picked = half(gt, kernel, kernel, kernel)
    assert 0 < int(picked.sum()) < 6  # the mask names exactly the images that are the clean downscale
    assert ((lq - clean).flatten(1).abs().amax(dim=1) < 1e-6).tolist() == picked.tolist()
    with pytest.raises(ValueError, match='bicubic_prob'):
        SecondOrderDegradation(opt=dict(REALESRGAN_X4PLUS_DEGRADATION, bicubic_prob=2), scale=4)


@pytest.mark.parametrize('prob, expected_calls', [(0.0, (0, 0)), (0.5, (5, 15)), (1.0, (20, 20))])
def test_second_order_prob_gates_the_second_round(monkeypatch, prob, expected_calls):
    import numpy as np

    from lpnsr_arch.data.degradation import REALESRGAN_X4PLUS_DEGRADATION, SecondOrderDegradation
    degradation = SecondOrderDegradation(opt=dict(REALESRGAN_X4PLUS_DEGRADATION, second_order_prob=prob), scale=4)
    calls = []
    original = degradation._second_round
    monkeypatch.setattr(degradation, '_second_round', lambda *args: calls.append(1) or original(*args))
    gt = torch.rand(1, 3, 96, 96)
    kernel = torch.zeros(1, 21, 21)
    kernel[:, 10, 10] = 1
    np.random.seed(0)
    for _ in range(20):
        assert degradation(gt, kernel, kernel, kernel)[0].shape == (1, 3, 24, 24)
    assert expected_calls[0] <= len(calls) <= expected_calls[1]
    with pytest.raises(ValueError, match='second_order_prob'):
        SecondOrderDegradation(opt=dict(REALESRGAN_X4PLUS_DEGRADATION, second_order_prob=-0.1), scale=4)


def test_a_training_recipe_gives_test_pairs_its_optional_degradation_keys() -> None:
    from lpnsr_arch.data.test_pairs import load_recipe
    options = Path(__file__).resolve().parents[1] / 'options' / 'demo_model' / '03d_noise_predictor_lpnsr_continue.yml'
    recipe = load_recipe(str(options))
    assert recipe['degradation']['bicubic_prob'] == 0.3 and recipe['degradation']['second_order_prob'] == 0.5


def test_a_misspelt_degradation_key_is_refused() -> None:
    """``bicubic_prb`` used to be ignored (bicubic_prob's default 0 applied without a word)."""
    with pytest.raises(KeyError, match="unknown option 'bicubic_prb'; did you mean the degradation option "
                                       "'bicubic_prob'"):
        SecondOrderDegradation(opt=dict(REALESRGAN_X4PLUS_DEGRADATION, bicubic_prb=0.3, gt_size=64), scale=4)
    SecondOrderDegradation(opt=dict(REALESRGAN_X4PLUS_DEGRADATION, bicubic_prob=0.3, gt_size=64, name='x'), scale=4)


def test_a_dataset_without_its_flip_options_is_refused_at_build(hr_folder: Path) -> None:
    opt = dataset_opt(str(hr_folder))
    del opt['use_rot']
    with pytest.raises(KeyError, match="dataset 'unit': option use_rot \\(true or false\\) is required"):
        LPNSRRealESRGANDataset(opt)


def test_the_training_crop_size_is_read_from_either_key_and_both_must_agree() -> None:
    from lpnsr_arch.data.degradation import training_gt_size
    assert training_gt_size({'gt_size': 96}) == 96
    assert training_gt_size({'datasets': {'train': {'gt_size': 64}}}) == 64
    assert training_gt_size({'gt_size': 64, 'datasets': {'train': {'gt_size': 64}}}) == 64
    with pytest.raises(ValueError, match=r'gt_size 256 \(top level\) and datasets.train.gt_size 128 differ'):
        training_gt_size({'gt_size': 256, 'datasets': {'train': {'gt_size': 128}}})
    with pytest.raises(KeyError, match='option gt_size'):
        training_gt_size({'datasets': {'train': {}}})
    with pytest.raises(ValueError, match='positive integer'):
        training_gt_size({'gt_size': '64'})


def test_scans_follow_symlinked_folders_skip_hidden_files_and_lmdb_ignores_meta_info(hr_folder: Path,
                                                                                      tmp_path: Path) -> None:
    """As BasicSR's scandir: a folder of links (a DF2K made of DIV2K and Flickr2K) is scanned through, and macOS
    ``._*`` files are not images. An LMDB reads its own meta_info.txt: a leftover ``meta_info`` is not checked."""
    from lpnsr_arch.data.sources import check_data_sources, scan_image_folder
    linked = tmp_path / 'df2k'
    linked.mkdir()
    (linked / 'div2k').symlink_to(hr_folder, target_is_directory=True)
    (linked / '._x.png').write_bytes(b'AppleDouble')
    assert scan_image_folder(str(linked)) == [f'div2k/{name}' for name in sorted(os.listdir(hr_folder))]
    check_data_sources({'name': 'links', 'dataroot_gt': str(linked), 'io_backend': {'type': 'disk'}})
    lmdb_path = tmp_path / 'hr.lmdb'
    names = sorted(os.listdir(hr_folder))
    make_lmdb_from_imgs(str(hr_folder), str(lmdb_path), names, [os.path.splitext(n)[0] for n in names])
    check_data_sources({'name': 'l', 'dataroot_gt': str(lmdb_path), 'meta_info': 'leftover/meta_info.txt',
                        'io_backend': {'type': 'lmdb'}})
    check_data_sources({'name': 'm', 'dataroot_gt': str(tmp_path / 'nowhere'), 'io_backend': {'type': 'memcached'}})
