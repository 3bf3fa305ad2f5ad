"""Learning-rate schedules of LPNSRModel's two optimizers when the GAN (and so the discriminator) starts late."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from lpnsr_arch.models.diffusion_base_model import warmup_cosine_lr
from lpnsr_arch.models.lpnsr_model import LPNSRModel
from test_lpnsr_model import changed, fixed_batch, make_opt, snapshot

LR_G, LR_D = 2e-3, 1e-3  # make_opt's optim_g / optim_d
GAN_START = 4  # D trains at iterations 4 and 6 (disc_update_freq 2), G at 1, 2, 3, 5


def cosine(base_lr: float, step: int) -> float:
    return warmup_cosine_lr(base_lr, step, warmup_iter=0, total_iter=8, eta_min=base_lr / 10)


def multistep(base_lr: float, step: int) -> float:
    return base_lr * 0.5**sum(step >= milestone for milestone in (3, 5))


SCHEDULES = {
    'WarmupCosineLR': ({'type': 'WarmupCosineLR', 'warmup_iter': 0, 'total_iter': 8, 'eta_min': 'tenth'}, cosine),
    'MultiStepLR': ({'type': 'MultiStepLR', 'milestones': [3, 5], 'gamma': 0.5}, multistep),
}


@pytest.mark.parametrize('name', sorted(SCHEDULES))
def test_a_late_discriminator_follows_the_global_schedule_without_a_scheduler_warning(tmp_path, name):
    """BasicSR steps every scheduler at the start of each iteration from the second one on; D's steps while the GAN
    has not started came before D's first ``optimizer.step()`` and PyTorch warned ("Detected call of
    `lr_scheduler.step()` before `optimizer.step()`"). No warning now, and the learning rates are unchanged: at
    iteration k both optimizers use their schedule after k - 1 steps (D's first update, at iteration 4, uses the
    rate the schedule has reached there, not its first value)."""
    scheduler, expected = SCHEDULES[name]
    scheduler = dict(scheduler)
    opt = make_opt(tmp_path, gan_start_iter=GAN_START, total_iter=8, scheduler=scheduler)
    if scheduler.get('eta_min') == 'tenth':
        scheduler['eta_min'] = LR_G / 10
        opt['train']['optim_d']['lr'] = LR_D  # D's eta_min is then LR_G / 10 too: below LR_D, so D's rate moves
    torch.manual_seed(0)
    model = LPNSRModel(opt)
    batch = fixed_batch()
    d_before = snapshot(model.net_d)
    seen = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for it in range(1, 8):
            model.update_learning_rate(it)
            seen.append((model.optimizer_g.param_groups[0]['lr'], model.optimizer_d.param_groups[0]['lr']))
            model.feed_data(batch)
            model.optimize_parameters(it)
            if it == GAN_START - 1:
                assert not changed(d_before, model.net_d)  # D has not trained yet
    scheduler_warnings = [str(w.message) for w in caught if 'lr_scheduler' in str(w.message)]
    assert not scheduler_warnings, scheduler_warnings
    assert changed(d_before, model.net_d)
    for it, (lr_g, lr_d) in enumerate(seen, start=1):
        if name == 'WarmupCosineLR':  # both share eta_min = LR_G / 10
            want_g = cosine(LR_G, it - 1)
            want_d = warmup_cosine_lr(LR_D, it - 1, warmup_iter=0, total_iter=8, eta_min=LR_G / 10)
        else:
            want_g, want_d = expected(LR_G, it - 1), expected(LR_D, it - 1)
        assert math.isclose(lr_g, want_g, rel_tol=1e-12), (it, lr_g, want_g)
        assert math.isclose(lr_d, want_d, rel_tol=1e-12), (it, lr_d, want_d)
    if name == 'WarmupCosineLR':  # D's first update (iteration 4): 2e-4 + 0.8e-3 * (1 + cos(3 pi / 8)) / 2
        assert math.isclose(seen[GAN_START - 1][1], 2e-4 + 0.4e-3 * (1 + math.cos(3 * math.pi / 8)), rel_tol=1e-12)


def test_the_scheduler_warning_filter_does_not_leak(tmp_path):
    """The filter is local to the stepping of an idle optimizer's scheduler: the process's warning filters are the
    same afterwards, and the same misuse elsewhere still warns (recorded under the filters in force, not under
    ``pytest.warns``, which would reset them)."""
    model = LPNSRModel(make_opt(tmp_path, gan_start_iter=GAN_START))
    filters_before = list(warnings.filters)
    for it in (1, 2):
        model.update_learning_rate(it)
    assert warnings.filters == filters_before
    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    with warnings.catch_warnings(record=True) as caught:
        scheduler.step()
    assert any('before `optimizer.step()`' in str(w.message) for w in caught)
