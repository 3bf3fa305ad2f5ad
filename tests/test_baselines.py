"""Real-ESRNet/Real-ESRGAN baselines (RRDBNet, SwinIR) on the shared degradation, trained on CPU via train.main."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lpnsr_arch  # noqa: F401
from lpnsr_arch import train
from lpnsr_arch.models.synthetic_pairs import TrainingPairPool

from baseline_recipes import TINY_NETWORKS, tiny_recipe, write_images, write_recipe


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


def test_baseline_continues_from_a_flat_safetensors_file(tmp_path: Path) -> None:
    """``pretrain_network_g`` may be a flat ``.safetensors`` file (as weights/demo/ ships): BasicSR's own loader
    cannot read one; the baselines load through the plugin's (net_g and net_g_ema)."""
    from basicsr.archs import build_network
    from lpnsr_arch.weights import save_state_dict
    network = build_network(dict(TINY_NETWORKS['rrdbnet']))
    start = {k: torch.full_like(v, 0.0125) for k, v in network.state_dict().items()}
    save_state_dict(tmp_path / 'start.safetensors', start)
    name = 'unit_from_safetensors'
    opt = tiny_recipe('rrdbnet', 'LPNSRRealESRNetModel', write_images(tmp_path), name=name, total_iter=2)
    opt['path'].update(pretrain_network_g=str(tmp_path / 'start.safetensors'), param_key_g='params_ema')
    train.main(['-opt', write_recipe(opt, tmp_path / 'train.yml')], root_path=str(tmp_path))

    saved = torch.load(tmp_path / 'experiments' / name / 'models' / 'net_g_2.pth', map_location='cpu')
    for key in ('params', 'params_ema'):  # two small Adam steps away from the file, not from a random init
        assert max(float((saved[key][k] - v).abs().max()) for k, v in start.items()) < 2e-3


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


def test_every_shipped_recipe_has_a_pair_pool_that_fits_its_batch() -> None:
    import yaml
    checked = 0
    for path in sorted(Path(__file__).resolve().parents[1].glob('options/**/*.yml')):
        recipe = yaml.safe_load(path.read_text())
        queue_size = int(recipe.get('queue_size') or 0)
        if queue_size:
            batch = recipe['datasets']['train']['batch_size_per_gpu']
            assert queue_size % batch == 0, f'{path}: queue_size {queue_size} vs batch_size_per_gpu {batch}'
            checked += 1
    assert checked >= 2  # the RRDBNet and SwinIR baseline recipes


def test_a_pair_pool_that_does_not_fit_the_batch_is_refused_at_start(tmp_path: Path) -> None:
    folders = write_images(tmp_path)
    recipe = tiny_recipe('rrdbnet', 'LPNSRRealESRNetModel', folders, name='bad_queue', total_iter=1)
    recipe['queue_size'] = 3  # batch 2
    with pytest.raises(ValueError, match='queue_size 3 must be divisible by datasets.train.batch_size_per_gpu 2'):
        train.main(['-opt', write_recipe(recipe, tmp_path / 'bad_queue.yml')], root_path=str(tmp_path))


def built_gan_baseline(tmp_path: Path, **options):
    """A tiny LPNSRRealESRGANModel built directly (no training loop), with ``options`` at the top level."""
    from basicsr.utils import set_random_seed
    from lpnsr_arch.models.realesrgan_baseline_model import LPNSRRealESRGANModel
    opt = tiny_recipe('rrdbnet', 'LPNSRRealESRGANModel', write_images(tmp_path), name='unit_targets')
    opt.update(options, is_train=True, dist=False, rank=0, world_size=1)
    opt['path'] = {name: str(tmp_path / name) for name in ('models', 'training_states', 'visualization')}
    opt['train'].update(net_d_init_iters=0, net_d_iters=1)
    set_random_seed(0)
    return LPNSRRealESRGANModel(opt)


def test_gan_baseline_targets_follow_the_usm_flags_as_real_esrgan(tmp_path: Path, monkeypatch) -> None:
    """Real-ESRGAN: L1 (and perceptual) towards the sharpened GT, the discriminator's real images the plain GT
    (``gan_gt_usm: false``); the LR is made from the sharpened GT. Before, all three were the sharpened GT."""
    from basicsr.utils import USMSharp
    from lpnsr_arch.data.realesrgan_crop_dataset import LPNSRRealESRGANDataset
    model = built_gan_baseline(tmp_path)
    assert (model.opt['l1_gt_usm'], model.opt['percep_gt_usm'], model.opt['gan_gt_usm']) == (True, True, False)
    dataset = LPNSRRealESRGANDataset(dict(model.opt['datasets']['train'], phase='train', scale=4))
    batch = {key: torch.stack([dataset[i][key] for i in range(2)]) for key in ('gt', 'kernel1', 'kernel2',
                                                                             'sinc_kernel')}
    torch.manual_seed(1)
    model.feed_data(batch)
    sharpened = USMSharp()(model.gt)
    assert float((sharpened - model.gt).abs().max()) > 0.01  # the two targets really differ
    seen = {}
    original_pix = model.cri_pix
    monkeypatch.setattr(model, 'cri_pix', lambda out, target: seen.setdefault('l1', target) is not None and
                        original_pix(out, target))
    inputs = []  # D sees G's output (G step), then the real images, then G's output again
    model.net_d.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
    model.optimize_parameters(1)
    seen['d_real'] = inputs[1]
    assert torch.allclose(seen['l1'], sharpened, atol=1e-6)
    assert torch.equal(seen['d_real'], model.gt)


def test_gan_baseline_flags_can_sharpen_the_real_images_or_nothing(tmp_path: Path) -> None:
    from basicsr.utils import USMSharp
    with pytest.raises(ValueError, match='gan_gt_usm must be true or false'):
        built_gan_baseline(tmp_path / 'a', gan_gt_usm='yes')
    with pytest.raises(ValueError, match="gt_usm must be true or false, got 'false'"):
        built_gan_baseline(tmp_path / 'b', gt_usm='false')
    for options, sharpened_real in (({'gan_gt_usm': True}, True), ({'gt_usm': False}, False)):
        model = built_gan_baseline(tmp_path / str(len(options)) / next(iter(options)), **options)
        assert (model.usm_sharpener is None) == (not options.get('gt_usm', True))
        model.feed_data({'lq': torch.rand(2, 3, 16, 16), 'gt': torch.rand(2, 3, 64, 64)})  # a paired batch
        inputs = []
        model.net_d.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
        model.optimize_parameters(1)
        expected = USMSharp()(model.gt) if sharpened_real else model.gt
        torch.testing.assert_close(inputs[1], expected, atol=1e-6, rtol=0)  # D's real images
