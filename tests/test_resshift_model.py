"""ResShiftModel (stage 1) and the shared training machinery, on CPU with tiny real networks and generated images."""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Dict

import cv2
import numpy as np
import pytest
import torch

import lpnsr_arch  # noqa: F401  (registers everything; must come before basicsr)
import lpnsr_arch.losses  # noqa: F401
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils.misc import check_resume
from lpnsr_arch.losses.lpips_loss import LPNSRLPIPSLoss, TAP_CHANNELS, build_vgg16_features
from lpnsr_arch.models.diffusion_base_model import WarmupCosineLR, warmup_cosine_lr
from lpnsr_arch.models.resshift_model import ResShiftModel
from photo_batches import photo_batch
from skimage import data as skdata
from torch.utils.data import DataLoader

# one level, one Swin block in the middle: latent side multiple of 4; the pixel autoencoder's latent has 48 channels
TINY_UNET = dict(type='LPNSRResShiftUNet', image_size=8, in_channels=48, out_channels=48, model_channels=32,
                 channel_mult=[1], num_res_blocks=[1], attention_resolutions=[], num_head_channels=16, swin_depth=1,
                 swin_embed_dim=32, window_size=4, lq_size=8, mlp_ratio=2.0)


def make_opt(root: Path, **train_overrides) -> Dict:
    """A tiny pixel-space ResShift training configuration whose outputs go under ``root``."""
    paths = {name: str(root / name) for name in ('models', 'training_states', 'visualization')}
    for folder in paths.values():
        os.makedirs(folder, exist_ok=True)
    train = {
        'ema_decay': 0.9,
        'optim_g': {'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 0, 'betas': [0.9, 0.999]},
        'scheduler': {'type': 'WarmupCosineLR', 'warmup_iter': 2, 'total_iter': 100, 'eta_min': 1e-4},
        'total_iter': 100,
        'latent_opt': {'type': 'MSELoss', 'loss_weight': 1.0, 'reduction': 'mean'},
    }
    train.update(train_overrides)
    return {
        'name': 'test_resshift', 'model_type': 'ResShiftModel', 'scale': 4, 'num_gpu': 0, 'is_train': True,
        'dist': False, 'rank': 0, 'world_size': 1,
        'diffusion': {'num_timesteps': 4, 'kappa': 2.0, 'latent_flag': False},
        'network_g': dict(TINY_UNET),
        'network_ae': {'type': 'LPNSRPixelAutoencoder', 'factor': 4},
        'network_upsampler': {'type': 'LPNSRBicubicUpsampler', 'scale': 4},
        'path': dict(paths, ignore_resume_networks=['network_ae', 'network_upsampler']),
        'train': train,
        'val': {'seed': 7, 'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4}}},
    }


def fixed_batch(num: int = 2, gt_size: int = 32) -> Dict[str, torch.Tensor]:
    """GT crops of skimage's astronaut in [0, 1] and their bicubic x4 downscales."""
    return photo_batch('astronaut', num=num, gt_size=gt_size, row_step=64, cols=(200, 328))


def fixed_loss(model: ResShiftModel, batch: Dict[str, torch.Tensor], seed: int = 0) -> float:
    """The model's latent loss on ``batch`` with fixed timesteps/noise (a deterministic progress measure)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        return float(model.micro_batch_losses(batch['lq'], batch['gt'])['l_mse'])


@pytest.fixture(scope='module')
def lpips_weights(tmp_path_factory) -> Dict[str, str]:
    """Random-valued LPIPS weight files with the real layouts (offline: no real VGG weights exist here)."""
    folder = tmp_path_factory.mktemp('lpips')
    torch.manual_seed(0)
    vgg = {f'features.{k}': v for k, v in build_vgg16_features().state_dict().items()}
    lins = {f'lin{i}.model.1.weight': torch.rand(1, ch, 1, 1) for i, ch in enumerate(TAP_CHANNELS)}
    paths = {'vgg_path': str(folder / 'vgg16.pth'), 'lin_path': str(folder / 'lin.pth')}
    torch.save(vgg, paths['vgg_path'])
    torch.save(lins, paths['lin_path'])
    return paths


# ---------------------------------------------------------------------------------------------- schedule
def test_warmup_cosine_values():
    kwargs = dict(warmup_iter=10, total_iter=110, eta_min=0.1)
    assert warmup_cosine_lr(1.0, 0, **kwargs) == pytest.approx(0.1)
    assert warmup_cosine_lr(1.0, 9, **kwargs) == pytest.approx(1.0)
    assert warmup_cosine_lr(1.0, 10, **kwargs) == pytest.approx(1.0)
    assert warmup_cosine_lr(1.0, 60, **kwargs) == pytest.approx(0.55)
    assert warmup_cosine_lr(1.0, 110, **kwargs) == pytest.approx(0.1)
    assert warmup_cosine_lr(1.0, 500, **kwargs) == pytest.approx(0.1)


def test_warmup_cosine_scheduler_follows_formula():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = WarmupCosineLR(optimizer, warmup_iter=4, total_iter=20, eta_min=0.5)
    seen = []
    for _ in range(25):
        seen.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        scheduler.step()
    expected = [warmup_cosine_lr(2.0, s, warmup_iter=4, total_iter=20, eta_min=0.5) for s in range(25)]
    assert seen == pytest.approx(expected)
    with pytest.raises(ValueError, match='warmup_iter'):
        WarmupCosineLR(optimizer, warmup_iter=30, total_iter=20)


# ---------------------------------------------------------------------------------------------- training
def test_optimize_parameters_updates_only_the_denoiser(tmp_path):
    model = ResShiftModel(make_opt(tmp_path))
    before = [p.detach().clone() for p in model.net_g.parameters()]
    ema_before = [p.detach().clone() for p in model.net_g_ema.parameters()]
    model.feed_data(fixed_batch())
    model.optimize_parameters(1)
    for old, ema, new in zip(ema_before, model.net_g_ema.parameters(), model.net_g.parameters()):  # decay 0.9
        torch.testing.assert_close(ema, 0.9 * old + 0.1 * new, atol=1e-7, rtol=0)
    assert set(model.log_dict) == {'l_mse'}
    assert np.isfinite(model.log_dict['l_mse']) and model.log_dict['l_mse'] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.net_g.parameters()))
    assert not any(p.requires_grad for p in model.net_ae.parameters())
    assert not model.net_ae.training


def test_latent_loss_falls(tmp_path):
    torch.manual_seed(0)
    model = ResShiftModel(make_opt(tmp_path, scheduler={'type': 'WarmupCosineLR', 'warmup_iter': 0,
                                                        'total_iter': 100, 'eta_min': 1e-3}))
    batch = fixed_batch()
    start = np.mean([fixed_loss(model, batch, seed) for seed in range(4)])
    for it in range(1, 31):
        model.update_learning_rate(it)
        model.feed_data(batch)
        model.optimize_parameters(it)
    end = np.mean([fixed_loss(model, batch, seed) for seed in range(4)])
    assert end < 0.7 * start, (start, end)


def test_residual_prediction_loss_is_the_mse_of_y_minus_output(tmp_path):
    opt = make_opt(tmp_path)
    opt['diffusion']['predict_type'] = 'residual'
    model = ResShiftModel(opt)
    batch = fixed_batch()
    torch.manual_seed(3)
    with torch.no_grad():
        loss = float(model.micro_batch_losses(batch['lq'], batch['gt'])['l_mse'])
        torch.manual_seed(3)
        y, x0 = model.encode_condition(batch['lq']), model.encode_target(batch['gt'])
        t = model.diffusion.sample_timesteps(x0.shape[0], model.device)
        x_in = model.diffusion.training_inputs(x0, y, t, torch.randn_like(x0))
        output = model.net_g(x_in, t, lq=batch['lq'] * 2 - 1)
    assert loss == pytest.approx(float(torch.mean((output - (y - x0))**2)), rel=1e-5)


def test_gradient_accumulation_matches_full_batch(tmp_path):
    """Splitting a batch into micro-batches gives the full-batch gradient (deterministic loss)."""
    batch = fixed_batch(num=4)
    grads = []
    for accum in (1, 2):
        torch.manual_seed(0)
        model = ResShiftModel(make_opt(tmp_path, grad_accum=accum))

        def loss_fn(lq, gt, model=model):
            x0 = model.encode_target(gt)
            t = torch.full((lq.shape[0], ), 2)
            return {'l_mse': (model.net_g(x0, t, lq=lq * 2 - 1) - x0).pow(2).mean()}

        seen = []
        counted = lambda lq, gt, loss_fn=loss_fn: seen.append(lq.shape[0]) or loss_fn(lq, gt)  # noqa: E731
        terms = model.accumulate_gradients((batch['lq'], batch['gt']), counted, model.grad_scalers['g'], 1)
        assert terms is not None and seen == [4 // accum] * accum  # really split into micro-batches
        grads.append(torch.cat([p.grad.flatten() for p in model.net_g.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_amp_bf16_and_grad_clip_run(tmp_path, monkeypatch):
    model = ResShiftModel(make_opt(tmp_path, amp='bf16', grad_clip=0.01))
    clipped = []
    real_clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, 'clip_grad_norm_',
                        lambda params, max_norm, **kw: clipped.append(max_norm) or real_clip(params, max_norm, **kw))
    model.feed_data(fixed_batch())
    model.optimize_parameters(1)
    assert clipped == [0.01]
    assert np.isfinite(model.log_dict['l_mse'])
    assert all(torch.isfinite(p).all() for p in model.net_g.parameters())


def test_resume_continues_with_identical_state(tmp_path):
    """Save at iter 3 (fp16 AMP: the GradScaler is live), rebuild as BasicSR's resume does, compare, step both."""
    opt = make_opt(tmp_path, amp='fp16')
    torch.manual_seed(0)
    model_a = ResShiftModel(copy.deepcopy(opt))
    batch = fixed_batch()
    for it in range(1, 4):
        model_a.update_learning_rate(it)
        model_a.feed_data(batch)
        model_a.optimize_parameters(it)
    model_a.grad_scalers['g'].update(new_scale=1024.0)  # a non-default scale must survive the round trip
    model_a.save(epoch=0, current_iter=3)
    state = torch.load(tmp_path / 'training_states' / '3.state', map_location='cpu', weights_only=True)
    assert state['iter'] == 3 and state['grad_scalers']['g']['scale'] == 1024.0

    resumed_opt = copy.deepcopy(opt)
    resumed_opt['path']['resume_state'] = str(tmp_path / 'training_states' / '3.state')
    check_resume(resumed_opt, state['iter'])
    assert resumed_opt['path']['pretrain_network_g'].endswith('net_g_3.pth')
    assert 'pretrain_network_ae' not in resumed_opt['path']
    model_b = ResShiftModel(resumed_opt)
    model_b.resume_training(state)

    assert model_b.grad_scalers['g'].state_dict() == model_a.grad_scalers['g'].state_dict()
    assert model_b.schedulers[0].state_dict() == model_a.schedulers[0].state_dict()
    for pa, pb in zip(model_a.net_g_ema.parameters(), model_b.net_g_ema.parameters()):
        assert torch.equal(pa, pb)
    for pa, pb in zip(model_a.net_g.parameters(), model_b.net_g.parameters()):
        assert torch.equal(pa, pb)
    state_a, state_b = model_a.optimizer_g.state_dict(), model_b.optimizer_g.state_dict()
    assert state_a['param_groups'] == state_b['param_groups']
    for key in state_a['state']:
        for name, value in state_a['state'][key].items():
            assert torch.equal(value, state_b['state'][key][name])

    for model in (model_a, model_b):
        torch.manual_seed(123)
        model.update_learning_rate(4)
        model.feed_data(batch)
        model.optimize_parameters(4)
    for pa, pb in zip(model_a.net_g_ema.parameters(), model_b.net_g_ema.parameters()):
        assert torch.equal(pa, pb)


def test_nan_loss_skips_the_step_and_never_saves_nan_weights(tmp_path):
    model = ResShiftModel(make_opt(tmp_path))
    batch = fixed_batch()
    model.feed_data(batch)
    model.optimize_parameters(1)
    model.save(epoch=0, current_iter=1)
    checkpoint = tmp_path / 'models' / 'net_g_1.pth'
    saved_bytes = checkpoint.read_bytes()

    weights = [p.detach().clone() for p in model.net_g.parameters()]
    ema = [p.detach().clone() for p in model.net_g_ema.parameters()]
    bad = dict(batch, gt=batch['gt'].clone())
    bad['gt'][0, 0, 0, 0] = float('nan')
    model.feed_data(bad)
    model.optimize_parameters(2)
    assert model.log_dict == {'skipped_steps': 1.0}
    assert all(torch.equal(a, b) for a, b in zip(weights, model.net_g.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(ema, model.net_g_ema.parameters()))

    with torch.no_grad():
        next(model.net_g.parameters()).fill_(float('nan'))
    model.save(epoch=0, current_iter=1)
    assert checkpoint.read_bytes() == saved_bytes
    assert not (tmp_path / 'training_states' / '2.state').exists()


@pytest.mark.parametrize('section, key', [('train', 'grad_acum'), ('diffusion', 'kapa'), (None, 'network_upsampeler')])
def test_misspelt_option_names_the_key(tmp_path, section, key):
    opt = make_opt(tmp_path)
    if section is None:
        opt[key] = opt.pop('network_upsampler')
    else:
        opt[section][key] = 2
    with pytest.raises(KeyError, match=key):
        ResShiftModel(opt)


def test_a_missing_latent_loss_is_refused_before_any_network(tmp_path):
    opt = make_opt(tmp_path)
    opt['train'].pop('latent_opt')
    with pytest.raises(KeyError, match='train.latent_opt .* is required by ResShiftModel'):
        ResShiftModel.check_options(opt)


def test_a_pair_pool_is_refused_not_ignored(tmp_path):
    opt = make_opt(tmp_path)
    opt['queue_size'] = 16
    with pytest.raises(KeyError, match='queue_size: ResShiftModel keeps no training-pair pool'):
        ResShiftModel(opt)


def test_frozen_networks_must_be_ignored_on_resume(tmp_path):
    opt = make_opt(tmp_path)
    opt['path']['ignore_resume_networks'] = ['network_upsampler']
    with pytest.raises(KeyError, match='network_ae'):
        ResShiftModel(opt)


# ---------------------------------------------------------------------------------------------- validation
def write_pairs(folder: Path, count: int = 2) -> Dict[str, str]:
    """PNG pairs (GT 36x40, LR 9x10: not multiples of the network size, to exercise padding)."""
    image = skdata.coffee()
    roots = {'gt': folder / 'gt', 'lq': folder / 'lq'}
    for root in roots.values():
        root.mkdir(parents=True)
    for i in range(count):
        gt = cv2.resize(image[40 * i:40 * i + 144, 100:260], (40, 36), interpolation=cv2.INTER_AREA)
        lq = cv2.resize(gt, (10, 9), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(roots['gt'] / f'img{i}.png'), gt[..., ::-1])
        cv2.imwrite(str(roots['lq'] / f'img{i}.png'), lq[..., ::-1])
    return {k: str(v) for k, v in roots.items()}


def test_validation_runs_the_seeded_chain(tmp_path):
    model = ResShiftModel(make_opt(tmp_path))
    roots = write_pairs(tmp_path / 'val')
    dataset = PairedImageDataset({'name': 'tiny', 'type': 'PairedImageDataset', 'dataroot_gt': roots['gt'],
                                  'dataroot_lq': roots['lq'], 'io_backend': {'type': 'disk'}, 'phase': 'val',
                                  'scale': 4})
    loader = DataLoader(dataset, batch_size=1)
    model.nondist_validation(loader, current_iter=1, tb_logger=None, save_img=True)
    assert isinstance(model.metric_results['psnr'], float) and np.isfinite(model.metric_results['psnr'])
    assert (tmp_path / 'visualization' / 'img0' / 'img0_1.png').is_file()

    lq = next(iter(loader))['lq']
    first = model.super_resolve(lq, seed=3)
    assert first.shape == (1, 3, 36, 40) and 0 <= float(first.min()) and float(first.max()) <= 1
    assert torch.equal(first, model.super_resolve(lq, seed=3))
    assert not torch.equal(first, model.super_resolve(lq, seed=4))
    assert model.net_g.training  # validation restores the training mode


# ---------------------------------------------------------------------------------------------- LPIPS
def test_lpips_missing_weights_name_the_path(tmp_path, lpips_weights):
    missing = str(tmp_path / 'nowhere' / 'vgg16.pth')
    with pytest.raises(FileNotFoundError, match='nowhere'):
        LPNSRLPIPSLoss(vgg_path=missing, lin_path=lpips_weights['lin_path'])


def test_lpips_distance_properties(lpips_weights):
    loss = LPNSRLPIPSLoss(loss_weight=2.0, **lpips_weights)
    a = torch.rand(2, 3, 32, 32)
    b = torch.rand(2, 3, 32, 32, requires_grad=True)
    assert float(loss(a, a)) == pytest.approx(0.0, abs=1e-7)
    value = loss(b, a)
    assert float(value) > 0
    value.backward()
    assert b.grad is not None and float(b.grad.abs().sum()) > 0
    assert float(loss(b, a)) == pytest.approx(2.0 * float(LPNSRLPIPSLoss(**lpips_weights)(b, a)), rel=1e-5)


def test_lpips_is_float32_and_close_to_fp32_under_bf16_autocast(lpips_weights):
    """The VGG convolutions may run in bf16; the feature normalisation and the weighted distances run in float32 and
    the result is float32 (it was bf16)."""
    loss = LPNSRLPIPSLoss(**lpips_weights, reduction='none')
    torch.manual_seed(0)
    a = torch.rand(2, 3, 32, 32)
    b = (a + 0.05 * torch.randn_like(a)).clamp(0, 1)
    reference = loss.distance(b, a)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = loss.distance(b, a)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, reference, rtol=0.05, atol=0)


def test_resshift_with_lpips_backpropagates_through_the_decoder(tmp_path, lpips_weights):
    opt = make_opt(tmp_path, perceptual_opt=dict(type='LPNSRLPIPSLoss', loss_weight=1.0, **lpips_weights))
    model = ResShiftModel(opt)
    model.feed_data(fixed_batch())
    model.optimize_parameters(1)
    assert set(model.log_dict) == {'l_mse', 'l_lpips'}
    assert model.log_dict['l_lpips'] > 0


def test_a_nan_lpips_sample_is_replaced_by_zero_alone(tmp_path, lpips_weights):
    """The official trainer's rule, per sample: a NaN LPIPS counts 0 (that sample trains on the MSE alone); the
    other samples keep their LPIPS."""
    opt = make_opt(tmp_path, perceptual_opt=dict(type='LPNSRLPIPSLoss', loss_weight=2.0, **lpips_weights))
    model = ResShiftModel(opt)
    torch.manual_seed(3)
    pred, gt = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    distances = model.cri_perceptual.distance(pred, gt)
    torch.testing.assert_close(model.perceptual_loss(pred, gt), 2.0 * distances.mean())
    pred[1, 0, 0, 0] = float('nan')
    torch.testing.assert_close(model.perceptual_loss(pred, gt), 2.0 * (distances[0] + distances[2]) / 3)


@pytest.mark.parametrize('gt_usm', [None, True])
def test_synthetic_batches_train_towards_the_plain_gt_unless_gt_usm(tmp_path, gt_usm):
    """The diffusion models share the baselines' feed_data (synthetic_pairs.py): a kernel batch is degraded on the
    device, the target is a GT crop (plain by default, sharpened with ``gt_usm: true``), ``clean`` marks the plain
    bicubic pairs; a paired batch resets ``clean`` to unknown."""
    from lpnsr_arch.data.degradation import REALESRGAN_X4PLUS_DEGRADATION
    opt = make_opt(tmp_path)
    opt.update(REALESRGAN_X4PLUS_DEGRADATION, gt_size=64, bicubic_prob=0.5)
    if gt_usm is not None:
        opt['gt_usm'] = gt_usm
    model = ResShiftModel(opt)
    gt = fixed_batch(num=4, gt_size=80)['gt']
    pulse = torch.zeros(4, 21, 21)
    pulse[:, 10, 10] = 1
    torch.manual_seed(0)
    np.random.seed(1)  # the degradation's draws (and which pairs are clean) come from numpy, as Real-ESRGAN's
    model.feed_data({'gt': gt, 'kernel1': pulse, 'kernel2': pulse, 'sinc_kernel': pulse})
    assert model.lq.shape == (4, 3, 16, 16) and model.gt.shape == (4, 3, 64, 64)
    assert model.clean.dtype == torch.bool and model.clean.shape == (4, )
    assert 0 < int(model.clean.sum()) < 4, 'this seed draws both kinds of pair'
    if not gt_usm:  # a clean pair's LR is a window of the quantised antialiased bicubic downscale of its GT
        down = torch.nn.functional.interpolate(gt, size=(20, 20), mode='bicubic', antialias=True)
        down = (down * 255).round().clamp(0, 255) / 255
        for i in range(4):
            is_window = any(torch.equal(model.lq[i], down[i, :, top:top + 16, left:left + 16])
                            for top in range(5) for left in range(5))
            assert is_window == bool(model.clean[i]), f'pair {i}'
    target_is_a_plain_crop = all(
        any(torch.equal(model.gt[i], gt[i, :, top:top + 64, left:left + 64]) for top in range(17) for left in range(17))
        for i in range(4))
    assert target_is_a_plain_crop == (not gt_usm)
    model.feed_data(fixed_batch())
    assert model.clean is None
    with pytest.raises(KeyError, match="batch has no 'sinc_kernel'"):
        model.feed_data({'gt': gt, 'kernel1': pulse, 'kernel2': pulse})
