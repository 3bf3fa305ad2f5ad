"""Real-ESRNet/Real-ESRGAN baselines (RRDBNet, SwinIR) on the shared degradation, trained on CPU via train.main."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lpnsr_arch  # noqa: F401
from lpnsr_arch import train
from lpnsr_arch.models.realesrgan_baseline_model import TrainingPairPool

from baseline_recipes import tiny_recipe, write_images, write_recipe


@pytest.mark.parametrize('net, model_type', [('rrdbnet', 'LPNSRRealESRGANModel'),
                                             ('swinir', 'LPNSRRealESRNetModel')])
def test_tiny_baseline_trains_four_iterations_on_cpu(tmp_path: Path, net: str, model_type: str) -> None:
    name = f'unit_{net}_{model_type}'
    opt = tiny_recipe(net, model_type, write_images(tmp_path), name=name)
    train.main(['-opt', write_recipe(opt, tmp_path / 'train.yml')], root_path=str(tmp_path))

    experiment = tmp_path / 'experiments' / name
    assert (experiment / 'models' / 'net_g_4.pth').is_file()
    assert (experiment / 'training_states' / '4.state').is_file()
    assert (model_type == 'LPNSRRealESRGANModel') == (experiment / 'models' / 'net_d_4.pth').is_file()
    assert (experiment / 'visualization' / 'val0' / 'val0_4.png').is_file()  # validation ran on the 25 px LR
    state = torch.load(experiment / 'models' / 'net_g_4.pth', map_location='cpu')
    initial = torch.load(experiment / 'models' / 'net_g_2.pth', map_location='cpu')
    assert any(not torch.equal(state['params'][k], initial['params'][k]) for k in state['params'])  # it learnt


def test_pair_pool_fills_then_returns_stored_pairs() -> None:
    torch.manual_seed(0)
    pool = TrainingPairPool(size=4)
    batches = [(torch.full((2, 3, 2, 2), float(i)), torch.full((2, 3, 8, 8), float(i))) for i in range(3)]
    for lq, gt in batches[:2]:  # filling: batches pass through unchanged
        out_lq, out_gt = pool.swap(lq, gt)
        assert torch.equal(out_lq, lq) and torch.equal(out_gt, gt)
    out_lq, out_gt = pool.swap(*batches[2])
    assert set(out_lq[:, 0, 0, 0].tolist()) <= {0.0, 1.0}  # drawn from the pool, not the new batch
    assert torch.equal(out_lq[:, :, 0, 0], out_gt[:, :, 0, 0])  # pairs stay paired
    assert 2.0 in pool.lq_pool[:, 0, 0, 0].tolist()  # the new batch went into the pool


def test_pair_pool_needs_a_multiple_of_the_batch() -> None:
    with pytest.raises(ValueError, match='divisible'):
        TrainingPairPool(size=5).swap(torch.zeros(2, 3, 2, 2), torch.zeros(2, 3, 8, 8))
