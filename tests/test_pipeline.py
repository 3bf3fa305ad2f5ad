"""The LPNSR inference pipeline (lpnsr_arch/pipeline.py) with the real tiny registered networks."""
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import lpnsr_arch  # noqa: F401
from lpnsr_arch.archs.pixel_autoencoder_arch import LPNSRPixelAutoencoder
from lpnsr_arch.archs.upsampler_arch import LPNSRBicubicUpsampler
from lpnsr_arch.bench.presets import tiny_options
from lpnsr_arch.diffusion import NormalDraws, ResShiftDiffusion
from lpnsr_arch.pipeline import (REPO_ROOT, CroppedDraws, InferenceDefaults, LatentNoiseField, LPNSRPipeline,
                                 mirror_pad, pad_lr, resolve_checkpoint)
from lpnsr_arch.tiling import plan_tiles
from lpnsr_arch.weights import save_state_dict


@pytest.fixture(scope='module')
def pipeline() -> LPNSRPipeline:
    torch.manual_seed(0)
    return LPNSRPipeline.from_options(tiny_options())


def _lr(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ padding
@pytest.mark.parametrize('pad', [0, 3, 7, 20])
def test_mirror_pad_matches_numpy(pad):
    image = torch.arange(2 * 5 * 6, dtype=torch.float32).view(1, 2, 5, 6)
    symmetric = np.pad(image.numpy(), ((0, 0), (0, 0), (0, pad), (0, pad)), mode='symmetric')
    np.testing.assert_array_equal(mirror_pad(image, pad, pad, edge_duplicate=True).numpy(), symmetric)
    if pad < 5:  # numpy's 'reflect' differs from a periodic mirror only beyond one reflection
        reflect = np.pad(image.numpy(), ((0, 0), (0, 0), (0, pad), (0, pad)), mode='reflect')
        np.testing.assert_array_equal(mirror_pad(image, pad, pad, edge_duplicate=False).numpy(), reflect)


def test_official_padding_reaches_a_power_of_two():
    padded, (pad_h, pad_w) = pad_lr(_lr(70, 130), multiple=64, pad_mode='official')
    assert padded.shape[-2:] == (128, 256) and (pad_h, pad_w) == (58, 126)
    padded, _ = pad_lr(_lr(70, 130), multiple=64, pad_mode='multiple')
    assert padded.shape[-2:] == (128, 192)
    with pytest.raises(ValueError, match='pad_mode'):
        pad_lr(_lr(8, 8), multiple=64, pad_mode='zeros')


# ------------------------------------------------------------------------------------------------ determinism
def test_same_seed_is_bit_identical_and_another_seed_differs(pipeline):
    lr = _lr(16, 16)
    first = pipeline(lr, seed=7)
    assert first.shape == (1, 3, 64, 64) and first.dtype == torch.float32
    assert 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, pipeline(lr, seed=7))
    assert not torch.equal(first, pipeline(lr, seed=8))


def test_an_image_gets_the_same_noise_alone_and_anywhere_in_a_batch(pipeline):
    a, b = _lr(16, 16, seed=1), _lr(16, 16, seed=2)
    batch = pipeline(torch.cat([a, b]), seed=3)
    torch.testing.assert_close(batch[:1], pipeline(a, seed=3), atol=1e-5, rtol=0)
    torch.testing.assert_close(batch[1:], pipeline(b, seed=3), atol=1e-5, rtol=0)
    torch.testing.assert_close(pipeline(torch.cat([b, a]), seed=3), batch.flip(0), atol=1e-5, rtol=0)


def test_an_image_outside_0_1_is_refused(pipeline):
    with pytest.raises(ValueError, match=r'lr01 must be in \[0, 1\], got values in .* divide it by 255'):
        pipeline(_lr(8, 8) * 255, seed=0)  # a float image in 0..255 used to come back all white


def test_adain_matches_the_visible_image_not_the_padding(pipeline):
    lr = _lr(9, 9, seed=4) * 0.3 + 0.6  # bright: the official padding to a power of two adds mirrored content
    out = pipeline(lr, seed=0, color_fix='adain', pad_mode='official', tile=0)
    reference = torch.nn.functional.interpolate(lr, scale_factor=4, mode='bicubic', align_corners=False)
    torch.testing.assert_close(out.mean(dim=(2, 3)), reference.clamp(0, 1).mean(dim=(2, 3)), atol=2e-3, rtol=0)


def test_seeded_forward_is_sample_func_with_the_seeded_noise_field(pipeline):
    lr = _lr(16, 16, seed=1)
    out = pipeline(lr, seed=3, color_fix='none', tile=0)
    lq = lr * 2 - 1
    field = pipeline.noise_field(3, lq)
    manual = pipeline.sample_func(lq, draws=CroppedDraws(field, [(slice(None), slice(None))])) * 0.5 + 0.5
    torch.testing.assert_close(out, manual.clamp(0, 1), atol=0, rtol=0)


def test_noise_field_blocks_agree_across_crops_and_look_normal():
    field = LatentNoiseField(5, (2, 3, 150, 130), torch.device('cpu'), block=64)
    whole = field.crop(1, slice(None), slice(None))
    assert whole.shape == (2, 3, 150, 130)
    torch.testing.assert_close(field.crop(1, slice(40, 100), slice(60, 129)), whole[:, :, 40:100, 60:129],
                               rtol=0, atol=0)
    assert not torch.equal(field.crop(0, slice(None), slice(None)), whole)
    assert abs(whole.mean().item()) < 0.02 and abs(whole.std().item() - 1) < 0.02
    # neighbouring blocks are not copies of each other
    assert not torch.equal(whole[:, :, :64, :64], whole[:, :, :64, 64:128])


def test_noise_blocks_are_made_once_and_before_the_reverse_loop(pipeline, monkeypatch):
    """Overlapping tiles share their blocks (made once, bounded cache) and a chain's draws are all made before its
    loop runs; the noise itself is the same as a fresh field's."""
    made = []
    field = LatentNoiseField(5, (1, 3, 200, 200), torch.device('cpu'), block=64)
    generator_class = torch.Generator
    monkeypatch.setattr(torch, 'Generator', lambda *a, **k: made.append(1) or generator_class(*a, **k))
    boxes = [(slice(0, 128), slice(0, 128)), (slice(0, 128), slice(64, 192))]  # the second overlaps the first
    draws = CroppedDraws(field, boxes, prepare=4)
    assert len(made) == 4 * (4 + 2)  # 4 draws x (2x2 blocks of the first box + 2 new ones of the second)
    like = torch.zeros(2, 3, 128, 128)
    got = [draws(like) for _ in range(4)]
    assert len(made) == 24  # nothing made inside the loop
    fresh = LatentNoiseField(5, (1, 3, 200, 200), torch.device('cpu'), block=64)
    for index, draw in enumerate(got):
        expected = torch.cat([fresh.crop(index, rows, cols) for rows, cols in boxes])
        torch.testing.assert_close(draw, expected, rtol=0, atol=0)
    before = len(made)
    draws(like)  # a fifth call is made on demand
    assert len(made) == before + 6
    small = LatentNoiseField(5, (1, 3, 200, 200), torch.device('cpu'), block=64)
    small._max_blocks = 2
    for col in range(4):
        small.crop(0, slice(0, 64), slice(64 * col, 64 * col + 1))
    assert len(small._blocks) == 2 and list(small._blocks) == [(0, 0, 2), (0, 0, 3)]


def test_sample_func_consumes_the_five_official_draws(pipeline):
    lq = _lr(16, 16) * 2 - 1
    shape = (1, pipeline.latent_channels, 16, 16)
    draws = [torch.randn(shape, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    out = pipeline.sample_func(lq, draws=NormalDraws(injected=draws))
    assert out.shape == (1, 3, 64, 64) and out.abs().max() <= 1
    with pytest.raises(RuntimeError, match='injected draws'):
        pipeline.sample_func(lq, draws=NormalDraws(injected=draws[:4]))
    changed = pipeline.sample_func(lq, draws=NormalDraws(injected=draws[:4] + [draws[0]]))
    torch.testing.assert_close(changed, out, atol=0, rtol=0)  # the t = 0 draw is discarded


def test_odd_sizes_come_back_at_four_times_the_input(pipeline):
    assert pipeline(_lr(13, 21), seed=0, tile=0).shape == (1, 3, 52, 84)


def test_tile_batch_does_not_change_the_result(pipeline):
    lr = _lr(48, 32, seed=2)
    one = pipeline(lr, seed=5, tile=32, tile_overlap=16, tile_batch=1)
    many = pipeline(lr, seed=5, tile=32, tile_overlap=16, tile_batch=4)
    torch.testing.assert_close(many, one, atol=1e-5, rtol=0)


def test_bf16_is_close_to_fp32(pipeline):
    lr = _lr(16, 16, seed=4)
    fp32 = pipeline(lr, seed=1)
    bf16 = pipeline(lr, seed=1, precision='bf16')
    assert bf16.dtype == torch.float32
    assert (bf16 - fp32).abs().mean() < 0.005  # measured here: 0.0021 mean, 0.013 max
    assert (bf16 - fp32).abs().max() < 0.03


def test_bad_calls_are_refused(pipeline):
    no_predictor = LPNSRPipeline.from_options(tiny_options(with_noise_predictor=False))
    with pytest.raises(ValueError, match='noise predictor'):
        no_predictor(_lr(16, 16), noise='learned')
    with pytest.raises(ValueError, match='tiling'):
        pipeline(_lr(48, 48), draws=NormalDraws.seeded(0), tile=32, tile_overlap=16)
    with pytest.raises(ValueError, match='multiple of 16'):
        pipeline(_lr(48, 48), tile=24, tile_overlap=8)
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        pipeline(torch.rand(1, 1, 16, 16))
    with pytest.raises(KeyError, match='tile_size'):
        InferenceDefaults.from_dict({'tile_size': 3})


# ------------------------------------------------------------------------------------------------ tiling
class PointwiseDenoiser(nn.Module):
    """A stand-in denoiser that only mixes channels: any tiling must reproduce it away from tile edges."""
    size_multiple = 8

    def __init__(self, channels: int):
        super().__init__()
        self.mix = nn.Conv2d(channels + 3, channels, 1)

    def forward(self, x, timesteps, lq=None):
        return self.mix(torch.cat([x, lq], dim=1)) + 0.01 * timesteps.view(-1, 1, 1, 1)


class PointwiseNoisePredictor(nn.Module):

    def __init__(self, channels: int):
        super().__init__()
        self.head = nn.Conv2d(2 * channels + 3, 2 * channels, 1)

    def forward(self, z_t, pred_x0, lq, timesteps, *, mode='sample', noise=None, generator=None):
        mean, logvar = self.head(torch.cat([z_t, pred_x0, lq], dim=1)).chunk(2, dim=1)
        return mean, logvar.clamp(-30, 20)


def _clean_mask(height: int, width: int, tile: int, overlap: int, margin: int) -> np.ndarray:
    """LR pixels at least ``margin`` px inside every tile that covers them (image borders do not count)."""
    clean = np.ones((height, width), bool)
    for t in plan_tiles(height, width, tile, overlap):
        rows, cols = np.arange(t.top, t.top + t.height), np.arange(t.left, t.left + t.width)
        near_rows = ((rows - t.top < margin) & (t.top > 0)) | ((t.top + t.height - rows <= margin) &
                                                               (t.top + t.height < height))
        near_cols = ((cols - t.left < margin) & (t.left > 0)) | ((t.left + t.width - cols <= margin) &
                                                                 (t.left + t.width < width))
        dirty = near_rows[:, None] | near_cols[None, :]
        clean[t.top:t.top + t.height, t.left:t.left + t.width] &= ~dirty
    return clean


def test_tiled_equals_untiled_away_from_tile_edges_for_a_local_model():
    torch.manual_seed(0)
    local = LPNSRPipeline(upsampler=LPNSRBicubicUpsampler(scale=4), autoencoder=LPNSRPixelAutoencoder(factor=4),
                          denoiser=PointwiseDenoiser(48), noise_predictor=PointwiseNoisePredictor(48),
                          diffusion=ResShiftDiffusion(), defaults=InferenceDefaults(pad_mode='multiple'))
    lr = _lr(40, 48, seed=9)
    whole = local(lr, seed=11, tile=0, color_fix='none')
    tiled = local(lr, seed=11, tile=24, tile_overlap=8, tile_batch=2, color_fix='none')
    mask = _clean_mask(40, 48, tile=24, overlap=8, margin=3)  # bicubic reaches 2 LR px
    assert mask.mean() > 0.4 and not mask.all()
    sr_mask = torch.from_numpy(mask.repeat(4, 0).repeat(4, 1))
    diff = (tiled - whole).abs()[0].amax(dim=0)
    assert diff[sr_mask].max() < 1e-5
    assert diff[~sr_mask].max() > 1e-4  # the comparison can fail: tile edges do differ


# ------------------------------------------------------------------------------------------------ options
def test_from_options_loads_the_named_checkpoints(pipeline, tmp_path, monkeypatch):
    options = tiny_options()
    for name, net in (('unet', pipeline.denoiser), ('noise', pipeline.noise_predictor)):
        save_state_dict(tmp_path / f'{name}.safetensors', net.state_dict())
        options.setdefault('path', {})[f'pretrain_network_{name}'] = str(tmp_path / f'{name}.safetensors')
    torch.manual_seed(123)  # different random init: only the checkpoints can make the outputs agree
    loaded = LPNSRPipeline.from_options(options)
    lr = _lr(16, 16, seed=6)
    torch.testing.assert_close(loaded(lr, seed=2), pipeline(lr, seed=2), atol=0, rtol=0)
    options['path']['pretrain_network_unet'] = str(tmp_path / 'missing.pth')
    with pytest.raises(FileNotFoundError, match='pretrain_network_unet'):
        LPNSRPipeline.from_options(options)
    # a relative path is looked up in the current folder, then in the repository (the shipped weights/demo)
    shipped = 'weights/demo/denoiser_resshift.safetensors'
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint('pretrain_network_unet', 'unet.safetensors') == Path('unet.safetensors')
    assert resolve_checkpoint('pretrain_network_unet', shipped) == REPO_ROOT / shipped
    with pytest.raises(FileNotFoundError, match=r'path.pretrain_network_noise = nowhere.pth does not exist \(looked'):
        resolve_checkpoint('pretrain_network_noise', 'nowhere.pth')
    options['path'] = {'pretrain_network_unett': str(tmp_path / 'unet.safetensors')}
    with pytest.raises(KeyError, match='pretrain_network_unett'):
        LPNSRPipeline.from_options(options)
    del options['path']
    options['difusion'] = options.pop('diffusion', {})
    with pytest.raises(KeyError, match="'difusion'.*'diffusion'"):
        LPNSRPipeline.from_options(options)
    del options['difusion']
    del options['network_ae']
    with pytest.raises(KeyError, match='network_ae'):
        LPNSRPipeline.from_options(options)


def test_channels_last_path_matches_the_reference(pipeline):
    lr = _lr(16, 16, seed=2)
    reference = pipeline(lr, seed=1, tile=0)
    try:
        fast = pipeline.accelerate(channels_last=True)(lr.contiguous(memory_format=torch.channels_last), seed=1,
                                                       tile=0)
    finally:  # the module-scoped pipeline is shared with later tests
        pipeline.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-4)


def test_lr_size_multiple():
    from lpnsr_arch.pipeline import lr_size_multiple
    assert lr_size_multiple(scale=4, downscale=4, latent_multiple=8) == 8
    assert lr_size_multiple(scale=4, downscale=8, latent_multiple=8) == 16
    assert lr_size_multiple(scale=2, downscale=4, latent_multiple=4) == 8


def test_bad_option_values_are_refused_before_any_network_is_built(tmp_path):
    from lpnsr_arch.diffusion import DiffusionConfig
    for bad, message in (({'kappa': 0}, 'kappa must be a number > 0, got 0'),
                         ({'min_noise_level': 0}, 'min_noise_level must be a number > 0'),
                         ({'etas_end': 0}, r'etas_end must be a number in \(0, 1.0\]'),
                         ({'num_timesteps': 4.0}, 'num_timesteps must be an integer >= 2, got 4.0'),
                         ({'latent_flag': 'no'}, 'latent_flag must be true or false')):
        with pytest.raises(ValueError, match=message):
            DiffusionConfig.from_dict(bad)
    for bad, message in (({'color_fix': 'Wavelet'}, r"color_fix must be one of \['wavelet', 'adain', 'none'\]"),
                         ({'tile_batch': 0}, 'tile_batch must be an integer >= 1'),
                         ({'pad_mode': 'zeros'}, 'pad_mode must be one of'),
                         ({'noise': 'learnt'}, 'noise must be one of'),
                         ({'tile': -1}, 'tile must be an integer >= 0')):
        with pytest.raises(ValueError, match='inference options: ' + message):
            InferenceDefaults.from_dict(bad)
    options = tiny_options()
    options['inference'] = {'color_fix': 'Wavelet'}
    options['path'] = {'pretrain_network_unet': str(tmp_path / 'absent.pth')}  # not reached: the values come first
    with pytest.raises(ValueError, match='color_fix'):
        LPNSRPipeline.from_options(options)


def test_bad_arguments_are_refused_before_the_chain_runs(pipeline, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError('the chain ran before the arguments were checked')

    monkeypatch.setattr(pipeline, 'sample_func', must_not_run)
    for bad, message in (({'color_fix': 'Wavelet'}, 'color_fix must be one of'),
                         ({'noise': 'learnt'}, 'noise must be one of'),
                         ({'precision': 'f16'}, 'precision must be one of'),
                         ({'noise': 'gaussian', 'noise_mode': 'mean'}, "needs noise='learned'"),
                         ({'tile_batch': 0}, 'tile_batch must be an integer >= 1')):
        with pytest.raises(ValueError, match=message):
            pipeline(_lr(16, 16), seed=0, **bad)


def test_a_tile_given_alone_takes_an_overlap_that_fits():
    """As the CLI: the official default overlap (128) does not fit a 32 px tile, so a quarter of it is taken."""
    options = tiny_options()
    options['inference'] = {'tile': 256, 'tile_overlap': 128, 'pad_mode': 'multiple'}  # the official defaults
    official = LPNSRPipeline.from_options(options)
    assert official.resolve_tiling(32, None) == (32, 8)
    assert official.resolve_tiling(None, None) == (256, 128)
    assert official.resolve_tiling(0, None) == (0, 0)
    lr = _lr(48, 32, seed=2)
    torch.testing.assert_close(official(lr, seed=5, tile=32), official(lr, seed=5, tile=32, tile_overlap=8),
                               atol=0, rtol=0)


def test_position_seeded_draws_skip_the_discarded_final_draw(pipeline, monkeypatch):
    """The official t = 0 draw only keeps a shared stream in step; a noise field's crops make 4 draws, not 5."""
    calls = []
    original = LatentNoiseField.crop
    monkeypatch.setattr(LatentNoiseField, 'crop', lambda self, index, rows, cols: calls.append(index) is None and
                        original(self, index, rows, cols))
    pipeline(_lr(16, 16), seed=3, tile=0)
    assert sorted(set(calls)) == [0, 1, 2, 3]


def test_a_network_block_mistake_names_the_block():
    options = tiny_options()
    options['network_unet']['no_such_argument'] = 1
    with pytest.raises(TypeError, match="network_unet: .*no_such_argument"):
        LPNSRPipeline.from_options(options)
    options = tiny_options()
    options['network_unet']['type'] = 'LPNSRResShiftUnet'
    with pytest.raises(KeyError, match="network_unet.type 'LPNSRResShiftUnet' is not a registered network; did you "
                                       "mean 'LPNSRResShiftUNet'"):
        LPNSRPipeline.from_options(options)


def test_numpy_integers_are_taken_and_a_default_overlap_must_fit_its_tile(pipeline):
    defaults = InferenceDefaults(seed=np.int64(3), tile=np.int64(64), tile_overlap=np.int32(16))
    assert (defaults.seed, defaults.tile, defaults.tile_overlap) == (3, 64, 16)
    assert all(type(value) is int for value in (defaults.seed, defaults.tile, defaults.tile_overlap))
    assert pipeline.resolve_tiling(np.int64(32), None) == (32, 16)
    torch.testing.assert_close(pipeline(_lr(16, 16), seed=1, tile=np.int64(0), tile_batch=np.int64(2)),
                               pipeline(_lr(16, 16), seed=1, tile=0), atol=0, rtol=0)
    with pytest.raises(ValueError, match=r'tile_overlap must be smaller than tile \(16\), got 16'):
        InferenceDefaults(tile=16, tile_overlap=16)
    with pytest.raises(ValueError, match="tile must be an integer >= 0, got '16'"):
        pipeline.resolve_tiling('16', None)


def test_graph_replayed_networks_return_copies_that_the_next_replay_cannot_overwrite(monkeypatch):
    """accelerate(compile_mode='reduce-overhead') wraps each compiled network so that its outputs are copies (a
    CUDA-graph replay reuses its output memory) and each call begins a new graph step."""
    from lpnsr_arch.acceleration import GraphReplayed

    class TwoOutputs(torch.nn.Module):
        def forward(self, x, *, scale):
            return x, x * scale

    steps = []
    monkeypatch.setattr(torch.compiler, 'cudagraph_mark_step_begin', lambda: steps.append(1))
    x = torch.randn(2, 3)
    first, second = GraphReplayed(TwoOutputs())(x, scale=2.0)
    assert torch.equal(first, x) and first.data_ptr() != x.data_ptr()
    torch.testing.assert_close(second, x * 2)
    assert steps == [1]
    monkeypatch.setattr(torch, 'compile', lambda module, *, mode, dynamic: module)  # no compiler on the CPU here
    pipeline = LPNSRPipeline.from_options(tiny_options())
    pipeline.accelerate(compile_mode='reduce-overhead')
    assert isinstance(pipeline.denoiser, GraphReplayed) and isinstance(pipeline.noise_predictor, GraphReplayed)
    assert not isinstance(pipeline.upsampler, GraphReplayed)  # scope 'diffusion'
    lr = _lr(16, 16, seed=2)
    reference = LPNSRPipeline.from_options(tiny_options())
    reference.load_state_dict({k.replace('compiled.', ''): v for k, v in pipeline.state_dict().items()})
    torch.testing.assert_close(pipeline(lr, seed=1, tile=0), reference(lr, seed=1, tile=0), rtol=0, atol=0)
    assert len(steps) == 1 + 2 * reference.diffusion.num_timesteps - 1  # 4 denoiser + 3 noise-predictor calls


# ------------------------------------------------------------------------------------------------ self-ensemble
def _corner_weighted_upsampler(image: torch.Tensor) -> torch.Tensor:
    """An x2 upscaler that is not symmetric (its weights grow to the bottom-right), so each of the eight transforms
    gives a different output."""
    height, width = image.shape[-2:]
    ramp = torch.arange(height, dtype=image.dtype)[:, None] + 2 * torch.arange(width, dtype=image.dtype)[None, :]
    return torch.nn.functional.interpolate(image * (1 + ramp), scale_factor=2, mode='nearest')


def test_self_ensemble_is_the_mean_over_the_eight_transforms_on_non_square_images():
    from lpnsr_arch.archs.upsampler_arch import dihedral_self_ensemble
    image = _lr(5, 7)
    expected = torch.zeros(1, 3, 10, 14)
    for transposed in (False, True):  # the 8 symmetries as (transpose or not) x (flip rows or not) x (flip columns)
        for flip_rows in (False, True):
            for flip_cols in (False, True):
                dims = [d for d, on in ((-2, flip_rows), (-1, flip_cols)) if on]
                moved = image.transpose(-2, -1) if transposed else image
                out = _corner_weighted_upsampler(moved.flip(dims) if dims else moved)
                out = out.flip(dims) if dims else out
                expected += (out.transpose(-2, -1) if transposed else out) / 8
    result = dihedral_self_ensemble(_corner_weighted_upsampler, image)
    assert result.shape == (1, 3, 10, 14) and result.dtype == torch.float32
    torch.testing.assert_close(result, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(result, _corner_weighted_upsampler(image), atol=1e-3)  # the transforms matter here


def test_self_ensemble_of_a_symmetric_upscaler_is_the_upscaler():
    from lpnsr_arch.archs.upsampler_arch import dihedral_self_ensemble
    image = _lr(6, 9)
    bicubic = LPNSRBicubicUpsampler(scale=4)
    torch.testing.assert_close(dihedral_self_ensemble(bicubic, image), bicubic(image), rtol=1e-5, atol=1e-5)


class _CornerWeightedX4(nn.Module):
    """:func:`_corner_weighted_upsampler` twice (x4), brought back to about [0, 1]."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = _corner_weighted_upsampler(_corner_weighted_upsampler(image))
        return out / out.amax().clamp_min(1e-6)


def test_upsampler_self_ensemble_option_reaches_the_pre_upsampler(self_ensemble_calls):
    """``inference.upsampler_self_ensemble`` sets the default, a call can override it, and a non-boolean is refused."""
    options = tiny_options()
    options['inference'] = {**(options.get('inference') or {}), 'upsampler_self_ensemble': True}
    torch.manual_seed(0)
    pipeline = LPNSRPipeline.from_options(options)
    pipeline.upsampler = _CornerWeightedX4()
    seen = self_ensemble_calls
    lr = _lr(16, 24)
    ensembled = pipeline(lr, seed=3, tile=0)
    plain = pipeline(lr, seed=3, tile=0, upsampler_self_ensemble=False)
    assert seen == [True, False]
    assert not torch.allclose(ensembled, plain, atol=1e-4)
    with pytest.raises(ValueError, match="inference options: upsampler_self_ensemble must be true or false, got 'yes'"):
        InferenceDefaults.from_dict({'upsampler_self_ensemble': 'yes'})
    with pytest.raises(ValueError, match="upsampler_self_ensemble must be True, False or None, got 'false'"):
        pipeline(lr, seed=3, tile=0, upsampler_self_ensemble='false')
    assert seen == [True, False]  # refused before the chain ran
