"""LPNSRModel (stage 2: noise predictor through the unrolled chain), on CPU with tiny real networks."""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch

import lpnsr_arch  # noqa: F401  (registers everything; must come before basicsr)
import lpnsr_arch.losses  # noqa: F401
from basicsr.utils.misc import check_resume
from lpnsr_arch.models.lpnsr_model import LPNSRModel
from photo_batches import photo_batch

TINY_SWIN_UNET = dict(image_size=8, in_channels=48, out_channels=48, model_channels=32, channel_mult=[1],
                      num_res_blocks=[1], attention_resolutions=[], num_head_channels=16, swin_depth=1,
                      swin_embed_dim=32, window_size=4, lq_size=8, mlp_ratio=2.0)


def make_opt(root: Path, *, with_d: bool = True, **train_overrides) -> Dict:
    """A tiny pixel-space LPNSR configuration (random frozen denoiser) writing under ``root``."""
    paths = {name: str(root / name) for name in ('models', 'training_states', 'visualization')}
    for folder in paths.values():
        os.makedirs(folder, exist_ok=True)
    train = {
        'ema_decay': 0.9,
        'optim_g': {'type': 'AdamW', 'lr': 2e-3, 'weight_decay': 0},
        'scheduler': {'type': 'WarmupCosineLR', 'warmup_iter': 0, 'total_iter': 100, 'eta_min': 1e-3},
        'total_iter': 100,
        'grad_clip': 1.0,
        'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
    }
    opt = {
        'name': 'test_lpnsr', 'model_type': 'LPNSRModel', 'scale': 4, 'num_gpu': 0, 'is_train': True, 'dist': False,
        'rank': 0, 'world_size': 1,
        'diffusion': {'num_timesteps': 4, 'kappa': 2.0, 'latent_flag': False},
        'network_g': dict(TINY_SWIN_UNET, type='LPNSRNoisePredictor'),
        'network_unet': dict(TINY_SWIN_UNET, type='LPNSRResShiftUNet'),
        'network_ae': {'type': 'LPNSRPixelAutoencoder', 'factor': 4},
        'network_upsampler': {'type': 'LPNSRBicubicUpsampler', 'scale': 4},
        'path': dict(paths, ignore_resume_networks=['network_ae', 'network_upsampler', 'network_unet']),
        'train': train,
        'val': {'seed': 7},
    }
    if with_d:
        opt['network_d'] = {'type': 'LPNSRPatchDiscriminator', 'in_channels': 48, 'base_channels': 8, 'num_layers': 1}
        train.update(gan_opt={'type': 'GANLoss', 'gan_type': 'hinge', 'loss_weight': 0.1},
                     optim_d={'type': 'AdamW', 'lr': 1e-3, 'weight_decay': 0}, gan_space='latent', gan_start_iter=3,
                     disc_update_freq=2)
    train.update(train_overrides)
    return opt


ALL_ROWS = torch.ones(2, dtype=torch.bool)


def fixed_batch(num: int = 2, gt_size: int = 32) -> Dict[str, torch.Tensor]:
    """GT crops of skimage's chelsea in [0, 1] and their bicubic x4 downscales."""
    return photo_batch('chelsea', num=num, gt_size=gt_size, row_step=50, cols=(150, 278))


def snapshot(net: torch.nn.Module):
    return [p.detach().clone() for p in net.parameters()]


def changed(before, net: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def fixed_pixel_loss(model: LPNSRModel, batch: Dict[str, torch.Tensor]) -> float:
    """L1 of the chain with fixed draws, averaged over a few seeds (a deterministic progress measure)."""
    values = []
    for seed in range(3):
        torch.manual_seed(seed)
        with torch.no_grad():
            values.append(float(model.generator_losses(batch['lq'], batch['gt'], ALL_ROWS, use_gan=False)['l_pix']))
    return float(np.mean(values))


def test_generator_and_discriminator_iterations_alternate(tmp_path):
    model = LPNSRModel(make_opt(tmp_path))
    model.feed_data(fixed_batch())
    g0, d0, unet0 = snapshot(model.net_g), snapshot(model.net_d), snapshot(model.net_unet)

    model.optimize_parameters(2)  # before gan_start_iter: a generator step without the GAN term
    assert set(model.log_dict) == {'l_pix'}
    assert changed(g0, model.net_g) and not changed(d0, model.net_d)

    g1 = snapshot(model.net_g)
    model.optimize_parameters(4)  # GAN active, 4 % 2 == 0: discriminator only (the log keeps the last G values)
    assert set(model.log_dict) == {'l_pix', 'l_d'}
    assert changed(d0, model.net_d) and not changed(g1, model.net_g)

    d1 = snapshot(model.net_d)
    model.optimize_parameters(5)  # generator with the hinge G loss
    assert set(model.log_dict) == {'l_pix', 'l_g_gan', 'l_d'}
    assert changed(g1, model.net_g) and not changed(d1, model.net_d)
    assert not changed(unet0, model.net_unet)
    assert all(p.grad is None for p in model.net_unet.parameters())


def test_gradient_reaches_the_noise_predictor_through_the_frozen_denoiser(tmp_path):
    model = LPNSRModel(make_opt(tmp_path, with_d=False))
    batch = fixed_batch()
    loss = model.generator_losses(batch['lq'], batch['gt'], ALL_ROWS, use_gan=False)['l_pix']
    loss.backward()
    grads = [p.grad for p in model.net_g.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in model.net_unet.parameters())


def test_pixel_loss_falls(tmp_path):
    torch.manual_seed(0)
    model = LPNSRModel(make_opt(tmp_path, with_d=False))
    batch = fixed_batch()
    start = fixed_pixel_loss(model, batch)
    for it in range(1, 26):
        model.update_learning_rate(it)
        model.feed_data(batch)
        model.optimize_parameters(it)
    end = fixed_pixel_loss(model, batch)
    assert end < 0.9 * start, (start, end)


def test_pixel_space_gan_runs(tmp_path):
    opt = make_opt(tmp_path, gan_space='pixel', gan_start_iter=0)
    opt['network_d']['in_channels'] = 3
    model = LPNSRModel(opt)
    model.feed_data(fixed_batch())
    model.optimize_parameters(2)
    assert set(model.log_dict) == {'l_d'} and np.isfinite(model.log_dict['l_d'])
    model.optimize_parameters(3)
    assert set(model.log_dict) == {'l_pix', 'l_g_gan', 'l_d'}


def test_gan_samples_clean_limits_both_gan_terms_to_the_clean_rows(tmp_path):
    from lpnsr_arch.models.lpnsr_model import gan_loss_on_rows

    def row_mean(logits, target_is_real, is_disc):
        return logits.mean() * (1 if target_is_real else -1)

    logits = torch.arange(6.0, requires_grad=True).view(3, 2)
    on_rows = gan_loss_on_rows(row_mean, logits, torch.tensor([False, True, True]), target_is_real=True, is_disc=True)
    assert float(on_rows) == 3.5
    assert float(gan_loss_on_rows(row_mean, logits, None, target_is_real=False, is_disc=True)) == -2.5
    empty = gan_loss_on_rows(row_mean, logits, torch.zeros(3, dtype=torch.bool), target_is_real=True, is_disc=True)
    assert float(empty) == 0 and empty.requires_grad

    opt = make_opt(tmp_path, gan_space='pixel', gan_start_iter=0, gan_samples='clean')
    opt['network_d']['in_channels'] = 3
    model = LPNSRModel(opt)
    batch = fixed_batch()
    for clean in ([True, False], [False, False]):
        mask = torch.tensor(clean)
        d_terms = model.discriminator_losses(batch['lq'], batch['gt'], mask)
        g_terms = model.generator_losses(batch['lq'], batch['gt'], mask, use_gan=True)
        assert set(g_terms) == {'l_pix', 'l_g_gan'} and torch.isfinite(d_terms['l_d'])
    # with no clean row both GAN terms are exactly zero (the micro-batch still back-propagates)
    assert float(d_terms['l_d']) == 0 and float(g_terms['l_g_gan']) == 0
    g_terms['l_g_gan'].backward()
    # the same rows with the default (all): the terms differ from the clean-only ones
    model.gan_samples = 'all'
    assert float(model.generator_losses(batch['lq'], batch['gt'], torch.tensor([False, False]),
                                        use_gan=True)['l_g_gan']) != 0
    with pytest.raises(ValueError, match='gan_samples'):
        LPNSRModel(make_opt(tmp_path, gan_samples='degraded'))


def test_frozen_and_trained_networks_load_flat_safetensors_with_a_param_key(tmp_path):
    """The shipped weights/demo/ files are flat; ``param_key_*: params_ema`` (a BasicSR checkpoint's entry) must
    still load them, for the frozen networks as for ``net_g``."""
    from basicsr.archs import build_network
    from lpnsr_arch.weights import save_state_dict
    opt = make_opt(tmp_path, with_d=False)
    files = {}
    for key in ('network_unet', 'network_g'):
        torch.manual_seed(len(files) + 3)
        files[key] = build_network(dict(opt[key])).state_dict()
        save_state_dict(tmp_path / f'{key}.safetensors', files[key])
    opt['path'].update(pretrain_network_unet=str(tmp_path / 'network_unet.safetensors'), param_key_unet='params_ema',
                       pretrain_network_g=str(tmp_path / 'network_g.safetensors'), param_key_g='params_ema')
    model = LPNSRModel(opt)
    for net, key in ((model.net_unet, 'network_unet'), (model.net_g, 'network_g'), (model.net_g_ema, 'network_g')):
        for name, value in files[key].items():
            if not name.endswith(('attn_mask', 'relative_position_index')):
                torch.testing.assert_close(net.state_dict()[name], value, msg=name)


def test_ema_starts_as_net_g_where_a_non_strict_checkpoint_has_no_entry(tmp_path):
    """Starting the noise predictor from the denoiser (``strict_load_g: false``): the input conv and output head are
    not in the file; the EMA must hold net_g's initialisation there, not a second random one."""
    from basicsr.archs import build_network
    from lpnsr_arch.weights import save_state_dict
    opt = make_opt(tmp_path, with_d=False)
    torch.manual_seed(5)
    denoiser = build_network(dict(opt['network_unet'])).state_dict()
    save_state_dict(tmp_path / 'denoiser.safetensors', denoiser)
    opt['path'].update(pretrain_network_g=str(tmp_path / 'denoiser.safetensors'), strict_load_g=False)
    model = LPNSRModel(opt)
    net_g, ema = model.get_bare_model(model.net_g).state_dict(), model.net_g_ema.state_dict()
    mismatched = [name for name in net_g if not torch.equal(net_g[name], ema[name])]
    assert mismatched == []
    assert torch.equal(ema['time_embed.0.weight'], denoiser['time_embed.0.weight'])  # the shared part is loaded


@pytest.mark.parametrize('change, error, message', [
    (lambda train: train.pop('scheduler'), KeyError, 'train.scheduler'),
    (lambda train: train.pop('optim_g'), KeyError, 'train.optim_g'),
    (lambda train: train.update(ema_decay=1.5), ValueError, r'train.ema_decay must be in \[0, 1\)'),
    (lambda train: train.update(gan_start_iter=-5), ValueError, 'train.gan_start_iter must be an integer >= 0'),
    (lambda train: train['pixel_opt'].update(reduction='none'), ValueError, 'train.pixel_opt.reduction'),
    (lambda train: train.update(gan_space='pixle'), ValueError, 'train.gan_space must be one of'),
    (lambda train: train.update(gan_samples='cleen'), ValueError, 'train.gan_samples must be one of'),
    (lambda train: train.update(disc_update_freq=1), ValueError, r'train.disc_update_freq must be an integer >= 2'),
    (lambda train: train.pop('pixel_opt'), KeyError, 'needs train.pixel_opt and/or train.perceptual_opt'),
    (lambda train: train.pop('optim_d'), KeyError, 'network_d is set: train.gan_opt and train.optim_d'),
])
def test_a_train_block_that_would_fail_later_is_refused_before_any_network(tmp_path, change, error, message):
    """Every check runs in ``check_options`` (no network, data or device), which ``lpnsr_arch/train.py`` runs before
    BasicSR creates the experiment folder; the model's constructor runs it too."""
    opt = make_opt(tmp_path)
    change(opt['train'])
    with pytest.raises(error, match=message):
        LPNSRModel.check_options(opt)
    with pytest.raises(error, match=message):
        LPNSRModel(opt)


def test_relative_checkpoints_fall_back_to_the_repository_as_in_inference(tmp_path, monkeypatch):
    """Training started from another folder finds the shipped (repository-relative) weights, and a missing file's
    error names the option and both places looked in."""
    import lpnsr_arch.weights as weights
    from basicsr.archs import build_network
    checkout, elsewhere = tmp_path / 'checkout', tmp_path / 'elsewhere'
    (checkout / 'weights').mkdir(parents=True)
    (checkout / 'lpnsr_arch').mkdir()
    (checkout / 'setup.py').write_text('')  # what makes a folder the repository checkout
    elsewhere.mkdir()
    opt = make_opt(tmp_path / 'run', with_d=False)
    torch.manual_seed(4)
    denoiser = build_network(dict(opt['network_unet'])).state_dict()
    weights.save_state_dict(checkout / 'weights' / 'unet.safetensors', denoiser)
    monkeypatch.setattr(weights, 'REPO_ROOT', checkout)
    monkeypatch.setattr(weights, 'INSTALLED_DATA', tmp_path / 'no_plain_install')
    monkeypatch.chdir(elsewhere)
    opt['path'].update(pretrain_network_unet='weights/unet.safetensors')
    model = LPNSRModel(opt)
    torch.testing.assert_close(model.net_unet.state_dict()['time_embed.0.weight'], denoiser['time_embed.0.weight'])
    opt['path'].update(pretrain_network_unet='weights/nowhere.pth')
    with pytest.raises(FileNotFoundError, match=r'path.pretrain_network_unet = weights/nowhere.pth does not exist '
                                                r'\(looked in the current folder .*elsewhere, the repository '
                                                r'.*checkout\)'):
        LPNSRModel(opt)


def test_bf16_training_on_several_gpus_without_a_distributed_launch_is_refused(tmp_path):
    """DataParallel's replica threads would enter autocast without the bf16 dtype (CUDA's default: fp16, unscaled)."""
    opt = make_opt(tmp_path, with_d=False, amp='bf16')
    opt['num_gpu'] = 2
    with pytest.raises(ValueError, match='bf16 with num_gpu > 1 needs a distributed launch'):
        LPNSRModel(opt)


def test_a_checkpoint_that_does_not_fit_is_named_in_the_error(tmp_path):
    from lpnsr_arch.weights import CheckpointError, save_state_dict
    opt = make_opt(tmp_path, with_d=False)
    save_state_dict(tmp_path / 'not_the_denoiser.safetensors', {'conv.weight': torch.zeros(1)})
    for key in ('network_unet', 'network_g'):
        bad = copy.deepcopy(opt)
        bad['path'][f'pretrain_{key}'] = str(tmp_path / 'not_the_denoiser.safetensors')
        with pytest.raises(CheckpointError, match=r'not_the_denoiser\.safetensors does not fit'):
            LPNSRModel(bad)


def test_validation_output_is_the_inference_pipeline_output(tmp_path):
    """What validation scores is what ``LPNSRPipeline`` (the inference CLI) gives with the saved weights, the same
    seed, no tiling and no colour correction."""
    from lpnsr_arch.pipeline import LPNSRPipeline
    torch.manual_seed(0)
    opt = make_opt(tmp_path, with_d=False)
    model = LPNSRModel(copy.deepcopy(opt))
    with torch.no_grad():  # an EMA different from net_g, so that a pipeline built on net_g would not match
        for p in model.net_g_ema.parameters():
            p.mul_(0.9)
    model.save(epoch=0, current_iter=1)
    lq = fixed_batch(num=1)['lq'][..., :7, :6]
    validation = model.super_resolve(lq, seed=5)

    torch.save({'params': model.net_unet.state_dict()}, tmp_path / 'unet.pth')
    options = {key: opt[key] for key in ('network_upsampler', 'network_ae', 'network_unet', 'diffusion')}
    options['network_noise'] = opt['network_g']
    options['path'] = {'pretrain_network_unet': str(tmp_path / 'unet.pth'),
                       'pretrain_network_noise': str(tmp_path / 'models' / 'net_g_1.pth'),
                       'param_key_noise': 'params_ema'}
    options['inference'] = {'scale': 4, 'pad_mode': 'multiple', 'tile': 0, 'color_fix': 'none'}
    inference = LPNSRPipeline.from_options(options)(lq, seed=5)
    torch.testing.assert_close(validation, inference, rtol=0, atol=1e-6)


def test_resume_restores_both_optimizers_scalers_and_ema(tmp_path):
    opt = make_opt(tmp_path, amp='fp16', gan_start_iter=0)
    torch.manual_seed(0)
    model_a = LPNSRModel(copy.deepcopy(opt))
    batch = fixed_batch()
    for it in range(1, 5):
        model_a.update_learning_rate(it)
        model_a.feed_data(batch)
        model_a.optimize_parameters(it)
    model_a.grad_scalers['d'].update(new_scale=512.0)
    model_a.save(epoch=0, current_iter=4)
    assert (tmp_path / 'models' / 'net_d_4.pth').is_file()
    state = torch.load(tmp_path / 'training_states' / '4.state', map_location='cpu', weights_only=True)

    resumed_opt = copy.deepcopy(opt)
    resumed_opt['path']['resume_state'] = str(tmp_path / 'training_states' / '4.state')
    check_resume(resumed_opt, state['iter'])
    model_b = LPNSRModel(resumed_opt)
    model_b.resume_training(state)

    for name in ('g', 'd'):
        assert model_b.grad_scalers[name].state_dict() == model_a.grad_scalers[name].state_dict()
    for net in ('net_g', 'net_g_ema', 'net_d'):
        for pa, pb in zip(getattr(model_a, net).state_dict().values(), getattr(model_b, net).state_dict().values()):
            assert torch.equal(pa, pb), net
    for opt_a, opt_b in zip(model_a.optimizers, model_b.optimizers):
        sa, sb = opt_a.state_dict(), opt_b.state_dict()
        assert sa['param_groups'] == sb['param_groups']
        for key in sa['state']:
            for name, value in sa['state'][key].items():
                assert torch.equal(value, sb['state'][key][name])


def test_a_skipped_generator_and_a_skipped_discriminator_step_both_log(tmp_path):
    model = LPNSRModel(make_opt(tmp_path, gan_start_iter=0))
    batch = fixed_batch()
    bad = dict(batch, gt=batch['gt'].clone())
    bad['gt'][0, 0, 0, 0] = float('nan')
    model.feed_data(bad)
    model.optimize_parameters(1)  # a generator iteration
    model.optimize_parameters(2)  # a discriminator iteration (disc_update_freq 2): merging the logs used to raise
    assert model.log_dict == {'skipped_steps': 1.0, 'skipped_steps_d': 2.0}  # the run's count after each step


def test_nan_loss_skips_the_step(tmp_path):
    model = LPNSRModel(make_opt(tmp_path, with_d=False))
    batch = fixed_batch()
    bad = dict(batch, gt=batch['gt'].clone())
    bad['gt'][1, 2, 3, 4] = float('inf')
    before, ema_before = snapshot(model.net_g), snapshot(model.net_g_ema)
    model.feed_data(bad)
    model.optimize_parameters(1)
    assert model.log_dict == {'skipped_steps': 1.0}
    assert not changed(before, model.net_g) and not changed(ema_before, model.net_g_ema)
    with torch.no_grad():
        next(model.net_g.parameters()).fill_(float('nan'))
    model.save(epoch=0, current_iter=1)
    assert not (tmp_path / 'models' / 'net_g_1.pth').exists()


@pytest.mark.parametrize('key', ['gan_strat_iter', 'disc_update_frequency'])
def test_misspelt_train_option_names_the_key(tmp_path, key):
    opt = make_opt(tmp_path)
    opt['train'][key] = 2
    with pytest.raises(KeyError, match=key):
        LPNSRModel(opt)


def test_missing_denoiser_option_is_reported(tmp_path):
    opt = make_opt(tmp_path)
    del opt['network_unet']
    with pytest.raises(KeyError, match='network_unet'):
        LPNSRModel(opt)


def test_validation_chain_is_seeded_and_uses_the_learned_noise(tmp_path):
    model = LPNSRModel(make_opt(tmp_path))
    lq = fixed_batch(num=1)['lq'][..., :7, :6]
    first = model.super_resolve(lq, seed=11)
    assert first.shape == (1, 3, 28, 24)
    assert torch.equal(first, model.super_resolve(lq, seed=11))
    with torch.no_grad():  # the noise predictor's output must matter
        for p in model.net_g_ema.parameters():
            p.add_(0.5)
    assert not torch.equal(first, model.super_resolve(lq, seed=11))
    assert model.net_g.training


def test_the_training_encodes_run_in_fp32_outside_autocast(tmp_path):
    """The official step encodes HR and the upsampled LR under no_grad *before* its fp16 autocast: with train.amp the
    encodes (generator and discriminator iterations) must not be autocast, while the chain is."""
    model = LPNSRModel(make_opt(tmp_path, amp='bf16', gan_start_iter=0, disc_update_freq=2))
    seen = {'encode': [], 'denoiser': []}
    encode = model.net_ae.encode

    def spy_encode(x):
        seen['encode'].append(torch.is_autocast_enabled('cpu'))
        return encode(x)

    model.net_ae.encode = spy_encode
    model.net_unet.register_forward_pre_hook(lambda *_: seen['denoiser'].append(torch.is_autocast_enabled('cpu')))
    for it in (1, 2):  # a generator iteration, then a discriminator one (latent GAN: real = encode(gt))
        model.feed_data(fixed_batch())
        model.optimize_parameters(it)
    assert len(seen['encode']) == 3 and not any(seen['encode'])  # y twice, x0 once for D's real side
    assert seen['denoiser'] and all(seen['denoiser'])


def test_validation_self_ensembles_the_pre_upsampler_when_asked(tmp_path):
    """``val.upsampler_self_ensemble`` reaches the validation pipeline (default off); a non-boolean is refused before
    any network is built."""
    opt = make_opt(tmp_path, with_d=False)
    assert LPNSRModel(copy.deepcopy(opt)).sampling_pipeline().defaults.upsampler_self_ensemble is False
    opt.setdefault('val', {})['upsampler_self_ensemble'] = True
    assert LPNSRModel(copy.deepcopy(opt)).sampling_pipeline().defaults.upsampler_self_ensemble is True
    opt['val']['upsampler_self_ensemble'] = 'yes'
    with pytest.raises(ValueError, match="val.upsampler_self_ensemble must be true or false, got 'yes'"):
        LPNSRModel.check_options(opt)


@pytest.mark.parametrize('seed', ['7', 1.5, -1, True])
def test_a_bad_validation_seed_is_refused_before_any_network_is_built(tmp_path, seed):
    opt = make_opt(tmp_path, with_d=False)
    opt.setdefault('val', {})['seed'] = 3
    assert LPNSRModel.check_options(opt).val_seed == 3
    opt['val']['seed'] = seed
    with pytest.raises(ValueError, match=f'val.seed must be a non-negative integer, got {seed!r}'):
        LPNSRModel.check_options(opt)
