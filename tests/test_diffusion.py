"""The diffusion core: the spec's 4-step table, the forward process and the reverse loop with its noise sources."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lpnsr_arch.diffusion import (DiffusionConfig, GaussianNoise, LearnedNoise, NormalDraws, ResShiftDiffusion,
                                  exponential_sqrt_etas)

# LPNSR_SPEC.md §1a, "The 4-step v3 schedule" (computed with the official function)
SPEC_TABLE = {
    'sqrt_etas': [0.1, 0.5200963722, 0.7613819906, 0.99],
    'etas': [0.01, 0.2705002364, 0.5797025356, 0.9801],
    'posterior_mean_coef1': [0, 0.0369685444, 0.4666190326, 0.5914728453],
    'posterior_mean_coef2': [1, 0.9630314556, 0.5333809674, 0.4085271547],
    'posterior_variance': [0, 0.03852125822, 0.577118711, 0.9472969099],
    'posterior_log_variance_clipped': [-3.256545028, -3.256545028, -0.5497072953, -0.05414270809],
    'input_divisor': [1.019803903, 1.442914046, 1.821760177, 2.218197466],
}


def test_schedule_equals_the_spec_table():
    d = ResShiftDiffusion(DiffusionConfig())
    table = d.table()
    for name, expected in SPEC_TABLE.items():
        np.testing.assert_allclose(table[name], expected, rtol=1e-8, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(d.posterior_std[1:], [0.1962683322, 0.7596832965, 0.9732917907], rtol=1e-8)
    assert d.posterior_std[0] == 0
    pixel = ResShiftDiffusion(DiffusionConfig(latent_flag=False))
    np.testing.assert_allclose(pixel.input_divisor, [1.6, 4.120578233, 5.568291944, 6.94], rtol=1e-8)


def test_schedule_endpoints_for_other_lengths():
    s = exponential_sqrt_etas(15, min_noise_level=0.04, etas_end=0.99, kappa=2.0, power=0.3)
    assert s[0] == pytest.approx(0.02) and s[-1] == pytest.approx(0.99) and np.all(np.diff(s) > 0)


def test_config_rejects_unknown_keys():
    with pytest.raises(KeyError, match='kapa'):
        DiffusionConfig.from_dict({'kapa': 2.0})


def test_forward_process_statistics():
    d = ResShiftDiffusion()
    x0, y = torch.zeros(4096, 1), torch.ones(4096, 1)
    t = torch.full((4096, ), 2, dtype=torch.long)
    xt = d.q_sample(x0, y, t, torch.randn(4096, 1, generator=torch.Generator().manual_seed(0)))
    assert xt.mean().item() == pytest.approx(d.etas[2], abs=0.06)
    assert xt.std().item() == pytest.approx(2.0 * d.sqrt_etas[2], rel=0.05)


def test_reverse_loop_with_a_perfect_denoiser_returns_x0():
    d = ResShiftDiffusion()
    x0 = torch.randn(2, 3, 8, 8)
    y = x0 + 0.5
    calls = []

    def denoiser(x, t, lq):
        calls.append(int(t[0]))
        return x0

    out = d.sample(y, torch.zeros(2, 3, 8, 8), denoiser, GaussianNoise(NormalDraws.seeded(0)), torch.randn_like(y))
    assert calls == [3, 2, 1, 0]
    assert torch.equal(out, x0)


def test_residual_prediction_type_maps_the_output_to_x0():
    """ResShift's RESIDUAL type: the denoiser outputs y - x0, and the chain returns x0 = y - output."""
    d = ResShiftDiffusion(DiffusionConfig(predict_type='residual'))
    x0 = torch.randn(2, 3, 8, 8)
    y = x0 + 0.5 * torch.randn_like(x0)
    out = d.sample(y, torch.zeros(2, 3, 8, 8), lambda x, t, lq: y - x0, GaussianNoise(NormalDraws.seeded(0)),
                   torch.randn_like(y))
    assert torch.allclose(out, x0, atol=1e-6)
    zero = d.sample(y, torch.zeros(2, 3, 8, 8), lambda x, t, lq: torch.zeros_like(x), GaussianNoise(),
                    torch.randn_like(y))
    assert torch.equal(zero, y)  # a zero output is the pre-upsampled image itself
    assert torch.equal(ResShiftDiffusion().x0_from_output(x0, y), x0)  # the default (official) type: x0 itself
    with pytest.raises(ValueError, match='predict_type'):
        ResShiftDiffusion(DiffusionConfig(predict_type='epsilon'))


def test_reverse_chain_replays_the_spec_schedule_step_by_step():
    """The whole 4-step chain against a replay with the spec's numbers (not the code's tables): prior
    y + kappa sqrt_eta_3 d0, denoiser input x / input_divisor_t, x_{t-1} = coef1 x_t + coef2 x0 + std_t noise_t, and
    x0 itself at t = 0. The denoiser depends on its input, so every coefficient matters."""
    d = ResShiftDiffusion()
    generator = torch.Generator().manual_seed(0)
    y = torch.randn(1, 3, 4, 4, generator=generator)
    prior = torch.randn(1, 3, 4, 4, generator=generator)
    step_noise = {t: torch.randn(1, 3, 4, 4, generator=generator) for t in (3, 2, 1)}
    seen, states = [], []

    def source(x_t, pred_x0, lq, t):
        seen.append(t)
        return step_noise[t]

    out = d.sample(y, y, lambda x, t, lq: 0.5 * x + 0.1 * lq, source, prior,
                   callback=lambda state: states.append(state['x_t']))
    assert seen == [3, 2, 1]
    c1, c2 = SPEC_TABLE['posterior_mean_coef1'], SPEC_TABLE['posterior_mean_coef2']
    divisor, std = SPEC_TABLE['input_divisor'], [0, 0.1962683322, 0.7596832965, 0.9732917907]
    x = y + 2.0 * 0.99 * prior
    expected = []
    for t in (3, 2, 1, 0):
        pred = 0.5 * (x / divisor[t]) + 0.1 * y
        x = c1[t] * x + c2[t] * pred + std[t] * step_noise[t] if t > 0 else pred
        expected.append(x)
    for t, (state, replay) in enumerate(zip(states, expected)):
        torch.testing.assert_close(state, replay, atol=1e-6, rtol=1e-6, msg=f'x after step {3 - t}')
    torch.testing.assert_close(out, expected[-1], atol=1e-6, rtol=1e-6)


class _ConstantPredictor(torch.nn.Module):

    def forward(self, z_t, pred_x0, lq, t, mode='sample'):
        assert mode == 'dist'
        return torch.full_like(z_t, 0.5), torch.full_like(z_t, np.log(0.25))


def test_learned_noise_sample_and_mean():
    z = torch.zeros(1, 3, 4, 4)
    draws = NormalDraws(injected=[torch.ones_like(z)])
    sample = LearnedNoise(_ConstantPredictor(), draws)(z, z, z, 2)
    torch.testing.assert_close(sample, torch.full_like(z, 0.5 + 0.5 * 1.0))
    assert torch.equal(LearnedNoise(_ConstantPredictor(), mode='mean')(z, z, z, 2), torch.full_like(z, 0.5))
    with pytest.raises(ValueError):
        LearnedNoise(_ConstantPredictor(), mode='mode')


def test_normal_draws_are_reproducible_and_injected_draws_checked():
    a = NormalDraws.seeded(7)(torch.empty(3, 4))
    b = NormalDraws.seeded(7)(torch.empty(3, 4))
    assert torch.equal(a, b)
    draws = NormalDraws(injected=[torch.zeros(2)])
    with pytest.raises(ValueError, match='shape'):
        draws(torch.empty(3))
    with pytest.raises(RuntimeError, match='injected draws'):
        NormalDraws(injected=[])(torch.empty(1))


def test_gradients_flow_through_the_chain_into_the_noise_source():
    d = ResShiftDiffusion()
    weight = torch.tensor(0.3, requires_grad=True)

    def source(x_t, pred_x0, lq, t):
        return weight * torch.ones_like(x_t)

    y = torch.randn(1, 1, 4, 4)
    out = d.sample(y, y, lambda x, t, lq: 0.5 * x, source, torch.zeros_like(y))
    out.sum().backward()
    assert weight.grad is not None and weight.grad.abs() > 0


def test_scale_input_takes_any_single_integer_step():
    diffusion = ResShiftDiffusion(DiffusionConfig())
    x = torch.ones(2, 3, 4, 4)
    expected = diffusion.scale_input(x, 2)
    for step in (np.int64(2), torch.tensor(2), torch.full((2,), 2, dtype=torch.int64)):
        torch.testing.assert_close(diffusion.scale_input(x, step), expected)


def test_timesteps_from_a_generator_are_reproducible_and_uniform():
    diffusion = ResShiftDiffusion(DiffusionConfig())
    draw = [diffusion.sample_timesteps(4000, torch.device('cpu'), generator=torch.Generator().manual_seed(3))
            for _ in range(2)]
    assert torch.equal(draw[0], draw[1]) and draw[0].dtype == torch.int64
    counts = torch.bincount(draw[0], minlength=4)
    assert counts.numel() == 4 and int(counts.min()) > 900  # each of the 4 steps about 1000 times
