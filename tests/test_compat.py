"""BasicSR 1.4.2 compatibility fixes: torchvision shim, CPU-safe resume, contiguous DiffJPEG."""
from __future__ import annotations

import sys

import pytest
import torch

import lpnsr_arch  # noqa: F401
from lpnsr_arch import compat


def test_basicsr_imports_through_the_shim() -> None:
    import basicsr
    from basicsr.data.degradations import random_add_poisson_noise_pt

    assert basicsr.__version__ == '1.4.2'
    assert 'torchvision.transforms.functional_tensor' in sys.modules
    noisy = random_add_poisson_noise_pt(torch.full((1, 3, 8, 8), 0.5), gray_prob=1.0)  # the shimmed function's caller
    assert noisy.shape == (1, 3, 8, 8)


def test_fixes_replace_basicsr_resume_and_are_idempotent() -> None:
    import basicsr.train
    from basicsr.utils import DiffJPEG

    compat.install_basicsr_fixes()
    forward = DiffJPEG.forward
    compat.install_basicsr_fixes()
    assert basicsr.train.load_resume_state is compat.load_resume_state
    assert DiffJPEG.forward is forward  # not wrapped twice


def test_diffjpeg_output_is_contiguous_and_filterable_on_cpu() -> None:
    from basicsr.utils import DiffJPEG
    from basicsr.utils.img_process_util import filter2D

    compat.install_basicsr_fixes()
    out = DiffJPEG(differentiable=False)(torch.rand(2, 3, 24, 40), quality=torch.tensor([50.0, 80.0]))
    assert out.shape == (2, 3, 24, 40)
    assert out.is_contiguous()
    kernels = torch.zeros(2, 5, 5)
    kernels[:, 2, 2] = 1
    assert torch.allclose(filter2D(out, kernels), out)  # crashed with "view size is not compatible" before the fix


def _opt(root, *, auto_resume: bool, resume_state=None) -> dict:
    experiments_root = root / 'experiments' / 'exp'
    return {'name': 'exp', 'num_gpu': 0, 'auto_resume': auto_resume, 'root_path': str(root), 'network_g': {},
            'path': {'training_states': str(experiments_root / 'training_states'),
                     'models': str(experiments_root / 'models'), 'resume_state': resume_state}}


def test_auto_resume_picks_the_largest_iteration_under_root_path(tmp_path) -> None:
    state_dir = tmp_path / 'experiments' / 'exp' / 'training_states'
    state_dir.mkdir(parents=True)
    for iteration in (9, 10):  # 10 > 9 numerically, not as strings
        torch.save({'iter': iteration, 'epoch': 1}, state_dir / f'{iteration}.state')
    opt = _opt(tmp_path, auto_resume=True)
    state = compat.load_resume_state(opt)
    assert state['iter'] == 10
    assert opt['path']['resume_state'].endswith('10.state')
    assert opt['path']['pretrain_network_g'].endswith('net_g_10.pth')  # check_resume ran


def test_resume_keeps_the_param_keys_of_the_networks_it_does_not_resume(tmp_path) -> None:
    # BasicSR's check_resume turns every 'params_ema' into 'params'; a frozen network (ignore_resume_networks) is
    # still read from its own file and must keep its key, or a resumed run trains against other weights
    state_dir = tmp_path / 'experiments' / 'exp' / 'training_states'
    state_dir.mkdir(parents=True)
    torch.save({'iter': 5, 'epoch': 1}, state_dir / '5.state')
    opt = _opt(tmp_path, auto_resume=True)
    opt['network_unet'] = {}
    opt['path'].update(pretrain_network_unet='denoiser.pth', param_key_unet='params_ema', param_key_g='params_ema',
                       ignore_resume_networks=['network_unet'])
    compat.load_resume_state(opt)
    assert opt['path']['pretrain_network_unet'] == 'denoiser.pth' and opt['path']['param_key_unet'] == 'params_ema'
    assert opt['path']['pretrain_network_g'].endswith('net_g_5.pth') and opt['path']['param_key_g'] == 'params'


def test_auto_resume_without_states_starts_fresh(tmp_path) -> None:
    assert compat.load_resume_state(_opt(tmp_path, auto_resume=True)) is None


def test_explicit_missing_resume_state_names_the_file(tmp_path) -> None:
    missing = str(tmp_path / 'nope.state')
    with pytest.raises(FileNotFoundError, match='nope.state'):
        compat.load_resume_state(_opt(tmp_path, auto_resume=False, resume_state=missing))


def test_resume_maps_to_cpu_without_gpus() -> None:
    assert compat.resume_map_location({'num_gpu': 0}) == 'cpu'
