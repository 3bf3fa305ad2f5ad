"""Entry points: train.py (plain script, -m, main()), --auto_resume on CPU, test.py, and the datasets/ scripts."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch
import yaml

import lpnsr_arch  # noqa: F401
from lpnsr_arch import test as test_entry
from lpnsr_arch import train as train_entry

from baseline_recipes import REPO_ROOT, TINY_NETWORKS, tiny_recipe, write_images, write_recipe


def load_script(name: str) -> ModuleType:
    """Import ``datasets/<name>.py`` (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / 'datasets' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('command', [['lpnsr_arch/train.py'], ['-m', 'lpnsr_arch.train'], ['lpnsr_arch/test.py'],
                                     ['-m', 'lpnsr_arch.test']])
def test_entry_points_start_as_script_and_module(command) -> None:
    result = subprocess.run([sys.executable, *command, '-h'], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert '--auto_resume' in result.stdout


def test_auto_resume_continues_on_cpu_and_test_py_runs(tmp_path: Path) -> None:
    folders = write_images(tmp_path)
    name = 'unit_resume_rrdbnet'
    first = write_recipe(tiny_recipe('rrdbnet', 'LPNSRRealESRNetModel', folders, name=name, total_iter=4),
                         tmp_path / 'train4.yml')
    train_entry.main(['-opt', first], root_path=str(tmp_path))
    longer = write_recipe(tiny_recipe('rrdbnet', 'LPNSRRealESRNetModel', folders, name=name, total_iter=6),
                          tmp_path / 'train6.yml')
    train_entry.main(['-opt', longer, '--auto_resume'], root_path=str(tmp_path))

    experiments = tmp_path / 'experiments'
    assert sorted(p.name for p in experiments.iterdir()) == [name]  # resumed in place, nothing archived
    state = torch.load(experiments / name / 'training_states' / '6.state', map_location='cpu')
    assert state['iter'] == 6
    adam_steps = {int(s['step']) for s in state['optimizers'][0]['state'].values()}
    assert adam_steps == {6}  # 4 steps before the resume + 2 after (a fresh start would give 2)

    test_opt = {'name': 'unit_test_rrdbnet', 'model_type': 'LPNSRRealESRNetModel', 'scale': 4, 'num_gpu': 0,
                'manual_seed': 0,
                'datasets': {'test_1': {'name': 'val', 'type': 'PairedImageDataset',
                                        'dataroot_gt': str(folders['val_gt']), 'dataroot_lq': str(folders['val_lq']),
                                        'filename_tmpl': '{}', 'io_backend': {'type': 'disk'}}},
                'network_g': tiny_recipe('rrdbnet', 'LPNSRRealESRNetModel', folders, name=name)['network_g'],
                'path': {'pretrain_network_g': str(experiments / name / 'models' / 'net_g_latest.pth'),
                         'param_key_g': 'params_ema', 'strict_load_g': True},
                'val': {'save_img': True, 'suffix': 'sr',
                        'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True}}}}
    test_entry.main(['-opt', write_recipe(test_opt, tmp_path / 'test.yml')], root_path=str(tmp_path))
    result = cv2.imread(str(tmp_path / 'results' / 'unit_test_rrdbnet' / 'visualization' / 'val' / 'val0_sr.png'))
    assert result is not None and result.shape == (100, 100, 3)


def test_make_demo_hr_writes_full_images_and_crops(tmp_path: Path) -> None:
    written = load_script('make_demo_hr').main(['--out', str(tmp_path / 'hr'), '--images', 'astronaut', 'camera',
                                                '--crops-per-image', '2', '--crop-size', '64'])
    assert len(written) == 6
    assert cv2.imread(str(tmp_path / 'hr' / 'camera_crop01.png')).shape == (64, 64, 3)
    with pytest.raises(SystemExit, match='2'):  # one ERROR line naming the image (tests/test_cli_errors.py)
        load_script('make_demo_hr').main(['--out', str(tmp_path / 'x'), '--images', 'no_such_image'])


def write_two_hr(folder: Path) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(2):
        smooth = cv2.resize(rng.integers(0, 256, (12, 13, 3), dtype=np.uint8), (103, 98), cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f'img{index}.png'), smooth)


def test_make_test_pairs_is_reproducible_and_mod_crops(tmp_path: Path) -> None:
    write_two_hr(tmp_path / 'hr')
    make_test_pairs = load_script('make_test_pairs')
    for out in ('a', 'b'):
        make_test_pairs.main(['--hr', str(tmp_path / 'hr'), '--out', str(tmp_path / out), '--seed', '7'])
    lq_a = cv2.imread(str(tmp_path / 'a' / 'lq' / 'img1.png'))
    assert lq_a.shape == (24, 25, 3)
    assert cv2.imread(str(tmp_path / 'a' / 'gt' / 'img1.png')).shape == (96, 100, 3)
    assert np.array_equal(lq_a, cv2.imread(str(tmp_path / 'b' / 'lq' / 'img1.png')))
    make_test_pairs.main(['--hr', str(tmp_path / 'hr'), '--out', str(tmp_path / 'c'), '--degradation', 'bicubic'])
    assert not np.array_equal(lq_a, cv2.imread(str(tmp_path / 'c' / 'lq' / 'img1.png')))
    recipe = yaml.safe_load((REPO_ROOT / 'options' / 'demo_model' / '01_upsampler_rrdbnet.yml').read_text())
    for out, bicubic_prob in (('e', 1.0), ('f', 0.0)):  # the training mix's clean pairs do not reach test pairs
        recipe['bicubic_prob'] = bicubic_prob
        (tmp_path / f'{out}.yml').write_text(yaml.safe_dump(recipe))
        make_test_pairs.main(['--hr', str(tmp_path / 'hr'), '--out', str(tmp_path / out), '--opt',
                              str(tmp_path / f'{out}.yml')])
    assert np.array_equal(cv2.imread(str(tmp_path / 'e' / 'lq' / 'img1.png')),
                          cv2.imread(str(tmp_path / 'f' / 'lq' / 'img1.png')))
    with pytest.raises(SystemExit, match='2'):  # one ERROR line naming --hr (tests/test_cli_errors.py)
        make_test_pairs.main(['--hr', str(tmp_path / 'missing_hr'), '--out', str(tmp_path / 'd')])


def test_extract_subimages_and_make_lmdb(tmp_path: Path) -> None:
    write_two_hr(tmp_path / 'hr')
    count = load_script('extract_subimages').main(['--input', str(tmp_path / 'hr'), '--output', str(tmp_path / 'sub'),
                                                   '--crop-size', '64', '--step', '32'])
    assert count == 2 * 3 * 3  # 98x103 px: rows 0, 32, 34 (flush); columns 0, 32, 39 (flush)
    assert cv2.imread(str(tmp_path / 'sub' / 'img0_s009.png')).shape == (64, 64, 3)

    make_lmdb = load_script('make_lmdb')
    lmdb_path = str(tmp_path / 'sub.lmdb')
    assert make_lmdb.main(['--input', str(tmp_path / 'sub'), '--output', lmdb_path]) == 18
    with open(os.path.join(lmdb_path, 'meta_info.txt')) as meta:
        assert len(meta.readlines()) == 18
    for output in (lmdb_path, str(tmp_path / 'plain')):  # an existing LMDB, a name without .lmdb: exit status 2
        with pytest.raises(SystemExit, match='2'):
            make_lmdb.main(['--input', str(tmp_path / 'sub'), '--output', output])
    with open(os.path.join(lmdb_path, 'meta_info.txt')) as meta:
        assert len(meta.readlines()) == 18  # the existing LMDB is left as it was


def test_a_training_option_mistake_is_refused_before_the_experiment_folder_is_made(tmp_path: Path, caplog) -> None:
    """BasicSR makes (and archives an earlier) experiment folder before the model checks its options: the diffusion
    models' checks now run first, and end in one ERROR line naming the file and the key, exit status 2."""
    recipe = yaml.safe_load((REPO_ROOT / 'options' / 'demo' / 'train_lpnsr_demo.yml').read_text())
    recipe['train']['total_iterr'] = recipe['train'].pop('total_iter')
    path = tmp_path / 'typo.yml'
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(SystemExit, match='2'):
        train_entry.main(['-opt', str(path)], root_path=str(tmp_path))
    assert f"{path}: unknown option(s) ['train.total_iterr'] for LPNSRModel" in caplog.text
    assert not (tmp_path / 'experiments').exists()


def test_the_opt_file_is_found_as_inference_finds_one_and_a_missing_one_is_one_error_line(
        tmp_path: Path, monkeypatch, caplog) -> None:
    """``-opt options/...`` works from any folder (the repository's file); a missing ``-opt`` file ends in one ERROR
    line naming it and the places looked in (BasicSR itself would raise a traceback), before any folder is made."""
    monkeypatch.chdir(tmp_path)
    recipe = 'options/demo/train_rrdbnet_demo.yml'
    assert train_entry.resolve_opt_argument(['-opt', recipe, '--debug']) == ['-opt', str(REPO_ROOT / recipe),
                                                                              '--debug']
    assert train_entry.resolve_opt_argument([f'-opt={recipe}']) == [f'-opt={REPO_ROOT / recipe}']  # argparse's form
    with pytest.raises(SystemExit, match='2'):
        train_entry.main(['-opt', 'options/nope.yml'], root_path=str(tmp_path / 'runs'))
    assert 'options file options/nope.yml does not exist (looked in the current folder' in caplog.text
    assert not (tmp_path / 'runs').exists()


def dataset_mistakes(folders: dict, tmp_path: Path) -> list:
    """(phase, key, value, words the error must hold) for the mistakes a check before the start must catch."""
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'flat.lmdb').mkdir()
    return [
        ('train', 'dataroot_gt', str(tmp_path / 'no_such_hr'), ['datasets.train: dataroot_gt', 'no_such_hr',
                                                                'does not exist']),
        ('train', 'dataroot_gt', str(tmp_path / 'empty'), ['datasets.train: dataroot_gt', 'holds no image']),
        ('train', 'type', 'LPNSRRealESRGANDatset', ["datasets.train.type", "did you mean 'LPNSRRealESRGANDataset'"]),
        ('train', 'meta_info', str(tmp_path / 'meta.txt'), ['datasets.train: meta_info', 'meta.txt']),
        ('val', 'dataroot_lq', str(folders['hr'] / 'hr0.png'), ['datasets.val: dataroot_lq', 'not a folder']),
        ('val', 'io_backend', {'type': 'lmdb'}, ['datasets.val: dataroot_gt', "must end with '.lmdb'"]),
        ('val', 'dataroot_gt', str(tmp_path / 'flat.lmdb'), None),  # with the lmdb backend below
        ('train', 'gt_size', 48, ['gt_size 64 (top level) and datasets.train.gt_size 48 differ']),
    ]


@pytest.mark.parametrize('index', range(8))
def test_a_dataset_mistake_is_refused_before_the_experiment_folder_is_made(tmp_path: Path, caplog, index) -> None:
    """A wrong dataset path/type used to be found only once BasicSR had made the experiment folder (archiving an
    earlier run of the same name): the check now runs first, for every model type, baselines included."""
    folders = write_images(tmp_path)
    recipe = tiny_recipe('rrdbnet', 'LPNSRRealESRNetModel', folders, name='mistake')
    phase, key, value, words = dataset_mistakes(folders, tmp_path)[index]
    recipe['datasets'][phase][key] = value
    if words is None:  # an LMDB folder without BasicSR's files
        recipe['datasets'][phase]['io_backend'] = {'type': 'lmdb'}
        recipe['datasets'][phase]['dataroot_lq'] = value
        words = ['datasets.val: dataroot_gt', "lacks data.mdb and meta_info.txt"]
    earlier = tmp_path / 'experiments' / 'mistake'
    earlier.mkdir(parents=True)
    (earlier / 'train.log').write_text('an earlier run')
    with pytest.raises(SystemExit, match='2'):
        train_entry.main(['-opt', write_recipe(recipe, tmp_path / 'mistake.yml')], root_path=str(tmp_path))
    message = caplog.records[-1].getMessage()
    assert all(word in message for word in words), message
    assert sorted(p.name for p in (tmp_path / 'experiments').iterdir()) == ['mistake']  # nothing archived
    assert (earlier / 'train.log').read_text() == 'an earlier run'


@pytest.mark.parametrize('key, value, words', [
    ('bicubic_prb', 0.3, "did you mean the degradation option 'bicubic_prob'"), ('noise_range', [30], 'noise_range')])
def test_a_degradation_mistake_is_refused_before_the_experiment_folder_is_made(tmp_path: Path, caplog, key, value,
                                                                               words) -> None:
    """The degradation is built at the first synthetic batch; its options are checked before BasicSR starts."""
    folders = write_images(tmp_path)
    recipe = tiny_recipe('rrdbnet', 'LPNSRRealESRNetModel', folders, name='mistake')
    recipe[key] = value
    with pytest.raises(SystemExit, match='2'):
        train_entry.main(['-opt', write_recipe(recipe, tmp_path / 'mistake.yml')], root_path=str(tmp_path))
    assert words in caplog.records[-1].getMessage()
    assert not (tmp_path / 'experiments').exists()


def test_the_checks_before_the_start_see_force_yml_and_cover_test_py(tmp_path: Path, caplog) -> None:
    folders = write_images(tmp_path)
    recipe = write_recipe(tiny_recipe('rrdbnet', 'LPNSRRealESRNetModel', folders, name='forced'), tmp_path / 'r.yml')
    with pytest.raises(SystemExit, match='2'):  # the override is what BasicSR would run with
        train_entry.main(['-opt', recipe, '--force_yml', f'datasets:val:dataroot_gt={tmp_path / "nope"}'],
                         root_path=str(tmp_path))
    assert 'datasets.val: dataroot_gt' in caplog.text and 'nope' in caplog.text
    with pytest.raises(SystemExit, match='2'):
        train_entry.main(['-opt', recipe, '--force_yml', 'datasetz:val:name=x'], root_path=str(tmp_path))
    assert 'the options have no block datasetz' in caplog.text
    with pytest.raises(SystemExit, match='2'):  # a training run reads train and val* phases only
        train_entry.main(['-opt', recipe, '--force_yml', 'datasets:test=~'], root_path=str(tmp_path))
    assert "datasets.test: a training run reads the phases 'train' and 'val'" in caplog.text
    test_opt = {'name': 'unit_missing', 'model_type': 'LPNSRRealESRNetModel', 'scale': 4, 'num_gpu': 0,
                'datasets': {'test_1': {'name': 'val', 'type': 'PairedImageDataset', 'filename_tmpl': '{}',
                                        'dataroot_gt': str(folders['val_gt']), 'dataroot_lq': str(tmp_path / 'lqq'),
                                        'io_backend': {'type': 'disk'}}},
                'network_g': TINY_NETWORKS['rrdbnet'], 'val': {'save_img': False}}
    with pytest.raises(SystemExit, match='2'):
        test_entry.main(['-opt', write_recipe(test_opt, tmp_path / 'test.yml')], root_path=str(tmp_path))
    assert 'datasets.test_1: dataroot_lq' in caplog.text and 'lqq' in caplog.text
    assert not (tmp_path / 'results').exists() and not (tmp_path / 'experiments').exists()


def test_a_resumed_run_does_not_need_the_checkpoints_it_was_started_from(tmp_path: Path) -> None:
    """BasicSR's resume replaces pretrain_network_* by the run's own files (except the ignored, frozen networks):
    a start file that has since moved must not stop --auto_resume; without a state to resume it is still needed."""
    folders = write_images(tmp_path)
    recipe = tiny_recipe('rrdbnet', 'LPNSRRealESRNetModel', folders, name='resumed')
    recipe['path'] = dict(recipe.get('path') or {}, pretrain_network_g=str(tmp_path / 'moved' / 'net_g.pth'))
    options = write_recipe(recipe, tmp_path / 'resume.yml')
    with pytest.raises(FileNotFoundError, match='pretrain_network_g'):
        train_entry.check_options_before_start('train_pipeline', ['-opt', options, '--auto_resume'], str(tmp_path))
    states = tmp_path / 'experiments' / 'resumed' / 'training_states'
    states.mkdir(parents=True)
    (states / '4.state').write_bytes(b'')
    train_entry.check_options_before_start('train_pipeline', ['-opt', options, '--auto_resume'], str(tmp_path))
    with pytest.raises(FileNotFoundError, match='pretrain_network_g'):  # no --auto_resume: a fresh start
        train_entry.check_options_before_start('train_pipeline', ['-opt', options], str(tmp_path))
    recipe['path']['ignore_resume_networks'] = ['network_g']
    options = write_recipe(recipe, tmp_path / 'resume_ignored.yml')
    with pytest.raises(FileNotFoundError, match='pretrain_network_g'):  # an ignored network keeps its start file
        train_entry.check_options_before_start('train_pipeline', ['-opt', options, '--auto_resume'], str(tmp_path))
