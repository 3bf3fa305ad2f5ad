"""The networks: official key names/shapes/parameter counts at full size, shapes and autocast at tiny size."""
from __future__ import annotations

import pytest
import torch

from lpnsr_arch.archs.discriminator_arch import LPNSRPatchDiscriminator
from lpnsr_arch.archs.noise_predictor_arch import LPNSRNoisePredictor
from lpnsr_arch.archs.pixel_autoencoder_arch import LPNSRPixelAutoencoder
from lpnsr_arch.archs.resshift_unet_arch import LPNSRResShiftUNet
from lpnsr_arch.archs.upsampler_arch import LPNSRBicubicResidualRRDBNet, LPNSRBicubicUpsampler, LPNSRSwinIR
from lpnsr_arch.archs.vqgan_arch import LPNSRVQAutoencoder

# the official parameter counts (spec §2)
FULL_SIZE = [
    ('keys_resshift_unet_v3.tsv', LPNSRResShiftUNet, 118_593_583),
    ('keys_lpnsr_noise_predictor.tsv', LPNSRNoisePredictor, 118_602_226),
    ('keys_vq_f4.tsv', LPNSRVQAutoencoder, 55_322_782),
    ('keys_swinir_l.tsv', LPNSRSwinIR, 28_013_059),
]


def read_key_table(path):
    table = {}
    for line in path.read_text().splitlines():
        if line.startswith('#') or not line.strip():
            continue
        name, shape, dtype, _kind = line.split('\t')
        table[name] = (shape, dtype)
    return table


@pytest.mark.parametrize('tsv,cls,n_params', FULL_SIZE, ids=[c[1].__name__ for c in FULL_SIZE])
def test_full_size_keys_shapes_and_counts(shared_dir, tsv, cls, n_params):
    net = cls()  # defaults are the official configurations
    assert sum(p.numel() for p in net.parameters()) == n_params
    ours = {k: (str(tuple(v.shape)), str(v.dtype).replace('torch.', '')) for k, v in net.state_dict().items()}
    official = read_key_table(shared_dir / 'spec' / 'keys' / tsv)
    assert sorted(set(official) - set(ours)) == []
    assert sorted(set(ours) - set(official)) == []
    assert {k: v for k, v in ours.items() if official[k] != v} == {}


def test_official_counts_without_reference_material():
    assert sum(p.numel() for p in LPNSRVQAutoencoder().parameters()) == 55_322_782


def test_unet_and_noise_predictor_shapes(tiny_unet_kwargs):
    unet = LPNSRResShiftUNet(**tiny_unet_kwargs).eval()
    predictor = LPNSRNoisePredictor(**tiny_unet_kwargs).eval()
    x, lq = torch.randn(2, 3, 32, 16), torch.rand(2, 3, 32, 16) * 2 - 1
    t = torch.tensor([0, 3])
    with torch.no_grad():
        assert unet(x, t, lq=lq).shape == (2, 3, 32, 16)
        mean, logvar = predictor(x, x, lq, t, mode='dist')
        assert mean.shape == logvar.shape == (2, 3, 32, 16)
        assert float(logvar.min()) >= -30 and float(logvar.max()) <= 20
        assert torch.equal(predictor(x, x, lq, t, mode='mean'), mean)
        noise = torch.randn_like(mean)
        sample = predictor(x, x, lq, t, mode='sample', noise=noise)
        torch.testing.assert_close(sample, mean + torch.exp(0.5 * logvar) * noise)


def test_bad_sizes_and_modes_are_clear_errors(tiny_unet_kwargs):
    unet = LPNSRResShiftUNet(**tiny_unet_kwargs)
    with pytest.raises(ValueError, match='multiple of 16'):
        unet(torch.randn(1, 3, 24, 16), torch.tensor([1]), lq=torch.zeros(1, 3, 24, 16))
    predictor = LPNSRNoisePredictor(**tiny_unet_kwargs)
    with pytest.raises(ValueError, match='mode must be one of'):
        predictor(torch.randn(1, 3, 16, 16), torch.randn(1, 3, 16, 16), torch.zeros(1, 3, 16, 16),
                  torch.tensor([1]), mode='median')
    with pytest.raises(TypeError, match='windw_size'):
        LPNSRResShiftUNet(**tiny_unet_kwargs, windw_size=8)  # a misspelt argument is not swallowed
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([1, 2])
    for lq in (torch.zeros(2, 3, 32, 32), torch.zeros(1, 3, 16, 16)):  # an LR of another size, or another batch
        with pytest.raises(ValueError, match=r'lq is .* needs \(2, 3, 16, 16\)'):
            unet(x, t, lq=lq)
        with pytest.raises(ValueError, match=r'lq is .* needs \(2, 3, 16, 16\)'):
            predictor(x, x, lq, t, mode='mean')
    raw = LPNSRNoisePredictor(**tiny_unet_kwargs, double_z=False)  # no distribution: its noise cannot be drawn
    for mode in ('sample', 'mean', 'dist'):
        with pytest.raises(ValueError, match=f"mode '{mode}' needs double_z=True"):
            raw(x, x, torch.zeros(2, 3, 16, 16), t, mode=mode)
    assert raw(x, x, torch.zeros(2, 3, 16, 16), t, mode='raw').shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match='set num_heads'):
        LPNSRResShiftUNet(**dict(tiny_unet_kwargs, num_heads=-1, num_head_channels=-1))


def test_construction_time_shift_rule():
    # built at 16 with window 8: the deepest level (8) has no shift and no mask, whatever the runtime size
    unet = LPNSRResShiftUNet(image_size=16, model_channels=32, num_res_blocks=(1, 1), attention_resolutions=(16, 8),
                             channel_mult=(1, 2), num_head_channels=16, swin_embed_dim=32, lq_size=16)
    deep = unet.middle_block[1].blocks
    assert [b.shift_size for b in deep] == [0, 0] and deep[1].attn_mask is None
    top = unet.input_blocks[1][1].blocks
    assert [b.shift_size for b in top] == [0, 4] and tuple(top[1].attn_mask.shape) == (4, 64, 64)


def test_vq_round_trip_and_quantisation(tiny_vq_kwargs):
    torch.manual_seed(0)  # the straight-through sum z + (q - z) is a codebook entry up to float rounding of |z|
    vq = LPNSRVQAutoencoder(**tiny_vq_kwargs).eval()
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        z = vq.encode(x)
    assert z.shape == (1, 3, 8, 12) and vq.downscale == 4
    codes = vq.quantize.embedding.weight
    zq = vq.quantize(z)
    # every quantised vector is a codebook entry, and the gradient passes straight through
    flat = zq.permute(0, 2, 3, 1).reshape(-1, 3)
    assert torch.cdist(flat, codes).min(dim=1).values.max() < 1e-4
    z.requires_grad_(True)
    vq.quantize(z).sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))
    assert vq.decode(z.detach()).shape == (1, 3, 32, 48)
    reference = vq.quantize.indices(z.detach())
    with torch.autocast('cpu', dtype=torch.bfloat16):  # nearest codes in float32 under autocast too
        assert torch.equal(vq.quantize.indices(z.detach()), reference)


def test_pixel_autoencoder_is_exact():
    ae = LPNSRPixelAutoencoder(factor=4)
    x = torch.rand(2, 3, 32, 64) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (2, 48, 8, 16) and ae.latent_channels == 48 and ae.downscale == 4
    assert torch.equal(ae.decode(z), x)
    assert list(ae.state_dict()) == []
    with pytest.raises(ValueError, match='multiple of the factor'):
        ae.encode(torch.zeros(1, 3, 30, 32))


def test_discriminator_and_upsamplers():
    disc = LPNSRPatchDiscriminator(in_channels=3, base_channels=16, num_layers=3)
    assert disc(torch.randn(2, 3, 64, 64)).shape[:2] == (2, 1)
    assert any('weight_orig' in k for k in disc.state_dict())  # spectral norm
    up = LPNSRBicubicUpsampler(scale=4)
    assert up(torch.rand(1, 3, 10, 12)).shape == (1, 3, 40, 48)
    swinir = LPNSRSwinIR(depths=(2, ), num_heads=(2, ), embed_dim=16, img_size=16)
    assert swinir(torch.rand(1, 3, 13, 9)).shape == (1, 3, 52, 36)  # padded to the window and cropped back


def test_bicubic_residual_rrdbnet_starts_at_bicubic_and_keeps_rrdbnet_keys():
    from basicsr.archs.rrdbnet_arch import RRDBNet

    torch.manual_seed(0)
    net = LPNSRBicubicResidualRRDBNet(num_feat=8, num_block=1, num_grow_ch=4).eval()
    x = torch.rand(1, 3, 10, 12)
    bicubic = torch.nn.functional.interpolate(x, scale_factor=4, mode='bicubic', align_corners=False)
    with torch.no_grad():
        assert torch.equal(net(x), bicubic)  # zero-initialised correction
        net.conv_last.bias.fill_(0.25)
        assert torch.allclose(net(x), bicubic + 0.25)
    plain = RRDBNet(num_in_ch=3, num_out_ch=3, scale=4, num_feat=8, num_block=1, num_grow_ch=4)
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    with pytest.raises(ValueError, match='num_out_ch'):
        LPNSRBicubicResidualRRDBNet(num_in_ch=3, num_out_ch=1)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_networks_under_autocast_are_finite_and_close(tiny_unet_kwargs, tiny_vq_kwargs, dtype):
    torch.manual_seed(0)
    unet = LPNSRResShiftUNet(**tiny_unet_kwargs).eval()
    for p in unet.parameters():  # non-zero weights everywhere (the zero-init convs would hide errors)
        p.data.add_(0.02 * torch.randn_like(p))
    vq = LPNSRVQAutoencoder(**tiny_vq_kwargs).eval()
    x, lq, t = torch.randn(1, 3, 16, 16), torch.rand(1, 3, 16, 16) * 2 - 1, torch.tensor([2])
    img = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        ref = unet(x, t, lq=lq)
        ref_dec = vq.decode(vq.encode(img), quantize=False)
        with torch.autocast('cpu', dtype=dtype):
            out = unet(x, t, lq=lq)
            dec = vq.decode(vq.encode(img), quantize=False)
    assert torch.isfinite(out).all() and torch.isfinite(dec).all()
    scale = ref.abs().max().item()
    # measured here: bf16 3.4 % / 5.5 %, fp16 0.28 % / 0.67 % (fp16 has 3 more mantissa bits)
    unet_limit, vq_limit = (0.05, 0.1) if dtype == torch.bfloat16 else (0.01, 0.02)
    assert (out.float() - ref).abs().max().item() < unet_limit * scale
    assert (dec.float() - ref_dec).abs().max().item() < vq_limit * ref_dec.abs().max().item()


def test_vq_attention_takes_a_fused_kernel_and_equals_the_plain_maths():
    """The mid-block attention must reach SDPA with contiguous q/k/v (else PyTorch falls back to the math path, which
    materialises the (hw x hw) score matrix: 16 GiB per official 256-px tile)."""
    from lpnsr_arch.archs.vqgan_arch import AttnBlock
    torch.manual_seed(0)
    block = AttnBlock(32).eval()
    x = torch.randn(2, 32, 12, 10)
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = block(x)
    names = {event.name for event in prof.events()}
    assert 'aten::scaled_dot_product_attention' in names
    assert 'aten::_scaled_dot_product_attention_math' not in names
    with torch.no_grad():
        y = block.norm(x).flatten(2)  # (b, c, hw)
        q, k, v = (torch.einsum('oc,bcn->bno', p.weight[:, :, 0, 0], y) + p.bias for p in (block.q, block.k, block.v))
        attention = torch.softmax(q @ k.transpose(1, 2) / 32**0.5, dim=-1) @ v  # (b, hw, c)
        expected = x + block.proj_out(attention.transpose(1, 2).reshape(x.shape))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('size', [(16, 16), (20, 28), (32, 24)])
def test_swinir_equals_basicsr_and_builds_no_mask_per_call(size, monkeypatch):
    """Same weights, same outputs as BasicSR's SwinIR (at the construction size and others); the shift masks come
    from the cache, not from BasicSR's per-call ``calculate_mask``."""
    from basicsr.archs.swinir_arch import SwinIR, SwinTransformerBlock
    config = dict(upscale=4, img_size=16, window_size=4, depths=[2, 2], embed_dim=16, num_heads=[2, 2],
                  mlp_ratio=2.0, upsampler='nearest+conv', resi_connection='1conv', drop_path_rate=0.0)
    torch.manual_seed(0)
    ours = LPNSRSwinIR(**{**config, 'depths': (2, 2), 'num_heads': (2, 2)}).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.05 * torch.randn_like(p))  # non-trivial bias tables
    reference = SwinIR(in_chans=3, img_range=1.0, **config).eval()
    reference.load_state_dict(ours.state_dict())
    calls = []
    original = SwinTransformerBlock.calculate_mask
    monkeypatch.setattr(SwinTransformerBlock, 'calculate_mask', lambda self, s: calls.append(s) or original(self, s))
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        expected = reference(x)
        calls.clear()
        out = ours(x)
    assert calls == []
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_swinir_checkpointing_runs_and_large_masks_are_not_kept():
    from lpnsr_arch.archs import upsampler_arch
    torch.manual_seed(0)
    config = dict(img_size=16, window_size=4, depths=(2, ), embed_dim=16, num_heads=(2, ), resi_connection='1conv')
    plain = LPNSRSwinIR(**config).train()
    checkpointed = LPNSRSwinIR(**config, use_checkpoint=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 20, 20)
    plain.zero_grad()
    plain(x).square().mean().backward()
    checkpointed(x).square().mean().backward()  # BasicSR's layer called its blocks without x_size here
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    upsampler_arch._cached_swinir_shift_mask.cache_clear()
    side = int((upsampler_arch.SHIFT_MASK_CACHE_BYTES / (4 * 4 * 4)) ** 0.5) // 4 * 4 + 4  # just over the limit
    mask = upsampler_arch.swinir_shift_mask(side, side, 4, 2, torch.device('cpu'))
    assert mask.shape == ((side // 4) ** 2, 16, 16)
    assert upsampler_arch._cached_swinir_shift_mask.cache_info().currsize == 0
