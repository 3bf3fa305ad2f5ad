"""Smoke checks of the device paths, for a session that is lent a GPU (they also run on the CPU).

Each check runs small networks (the test suite's tiny configurations) on ``--device``: the inference pipeline
(untiled and with batched tiles; fp32, bf16, fp16; channels-last; captured CUDA graphs; on CUDA also ``torch.compile``
with CUDA graphs),
compared with the CPU in fp32, and four training iterations of ``LPNSRModel`` (with its discriminator) and
``ResShiftModel`` at batch 2 under each AMP setting, which must run and give finite losses (printed, not compared).
It prints one line per check and exits with 1 if any failed.

    python scripts/gpu_smoke.py --device cuda      # what scripts/gpu_session.sh runs first
    python scripts/gpu_smoke.py --device cpu       # the same checks on the CPU (fp16 autocast there is slow)
"""
from __future__ import annotations

import argparse
import copy
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, List, Tuple

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / 'tests'))  # the tiny configurations and photo batches of the test suite

import lpnsr_arch  # noqa: E402,F401  (registers everything; before basicsr)
import torch  # noqa: E402

from lpnsr_arch.bench.presets import tiny_options  # noqa: E402
from lpnsr_arch.pipeline import LPNSRPipeline  # noqa: E402

logger = logging.getLogger('gpu_smoke')
#: Largest mean |difference| from the CPU fp32 output, per precision (outputs in [0, 1]).
TOLERANCE = {'fp32': 1e-3, 'bf16': 0.02, 'fp16': 0.01}


def _difference(out: torch.Tensor, reference: torch.Tensor) -> str:
    out = out.float().cpu()
    if out.shape != reference.shape:
        raise AssertionError(f'shape {tuple(out.shape)} vs {tuple(reference.shape)}')
    if not torch.isfinite(out).all():
        raise AssertionError('non-finite values')
    return f'mean |d| {float((out - reference).abs().mean()):.2e}, max {float((out - reference).abs().max()):.2e}'


def _checked(out: torch.Tensor, reference: torch.Tensor, precision: str) -> str:
    """:func:`_difference`, raising ``AssertionError`` when the mean difference is above the precision's tolerance."""
    text = _difference(out, reference)
    if float((out.float().cpu() - reference).abs().mean()) > TOLERANCE[precision]:
        raise AssertionError(f'{text}: above {TOLERANCE[precision]}')
    return text


def pipeline_checks(device: torch.device) -> List[Tuple[str, Callable[[], str]]]:
    torch.manual_seed(0)
    reference_pipeline = LPNSRPipeline.from_options(tiny_options())  # random weights: every copy shares them
    pipeline = copy.deepcopy(reference_pipeline).to(device)
    lr = torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(0))
    references = {tile: reference_pipeline(lr, seed=3, tile=tile, tile_overlap=16 if tile else None)
                  for tile in (0, 32)}
    checks = []
    for precision in ('fp32', 'bf16', 'fp16'):
        for tile, tile_batch in ((0, 1), (32, 4)):
            def run(precision=precision, tile=tile, tile_batch=tile_batch) -> str:
                out = pipeline(lr.to(device), seed=3, tile=tile, tile_overlap=16 if tile else None,
                               tile_batch=tile_batch, precision=precision)
                return _checked(out, references[tile], precision)
            checks.append((f'pipeline {precision} tile {tile or "off"} batch {tile_batch}', run))

    def channels_last() -> str:
        fast = copy.deepcopy(reference_pipeline).to(device).accelerate(channels_last=True)
        out = fast(lr.to(device).contiguous(memory_format=torch.channels_last), seed=3, tile=32, tile_overlap=16,
                   tile_batch=4)
        return _checked(out, references[32], 'fp32')

    checks.append(('pipeline channels-last, batched tiles', channels_last))

    def cuda_graphs() -> str:
        fast = copy.deepcopy(reference_pipeline).to(device).accelerate(cuda_graphs=True, compile_scope='all')
        outs = [fast(lr.to(device), seed=3, tile=32, tile_overlap=16, tile_batch=4, precision='bf16')
                for _ in range(3)]  # capture, then two replays: the same output each time
        if not all(torch.equal(out, outs[0]) for out in outs[1:]):
            raise AssertionError('replays differ from the captured call')
        return _checked(outs[-1], references[32], 'bf16')

    checks.append(('pipeline CUDA graphs, scope all (bf16)', cuda_graphs))
    if device.type == 'cuda':
        def compiled() -> str:
            fast = copy.deepcopy(reference_pipeline).to(device).accelerate(compile_mode='reduce-overhead')
            for _ in range(3):  # warm-up, recording, replay
                out = fast(lr.to(device), seed=3, tile=32, tile_overlap=16, tile_batch=4, precision='bf16')
            return _checked(out, references[32], 'bf16')

        checks.append(('pipeline torch.compile reduce-overhead (bf16)', compiled))
    return checks


def training_checks(device: torch.device, root: Path) -> List[Tuple[str, Callable[[], str]]]:
    import test_lpnsr_model
    import test_resshift_model
    from lpnsr_arch.models.lpnsr_model import LPNSRModel
    from lpnsr_arch.models.resshift_model import ResShiftModel

    checks = []
    for name, model_class, module in (('LPNSRModel (+ D)', LPNSRModel, test_lpnsr_model),
                                      ('ResShiftModel', ResShiftModel, test_resshift_model)):
        for amp in ('none', 'bf16', 'fp16'):
            def run(model_class=model_class, module=module, amp=amp, name=name) -> str:
                opt = module.make_opt(root / f'{model_class.__name__}_{amp}', amp=amp)
                opt['num_gpu'] = 1 if device.type == 'cuda' else 0
                torch.manual_seed(0)
                model = model_class(opt)
                batch = module.fixed_batch(num=2)
                losses = []
                for iteration in range(1, 5):  # LPNSRModel's GAN starts at iteration 3 in the test recipe
                    model.update_learning_rate(iteration)
                    model.feed_data(batch)
                    model.optimize_parameters(iteration)
                    losses.append({k: float(v) for k, v in model.log_dict.items()})
                bad = [loss for loss in losses if not all(map(lambda v: v == v and abs(v) != float('inf'),
                                                              loss.values()))]
                if bad:
                    raise AssertionError(f'non-finite losses {bad}')
                return ', '.join(f'{k} {v:.3g}' for k, v in losses[-1].items())
            checks.append((f'training {name} amp {amp}, batch 2, 4 iterations', run))
    return checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda', help='cuda, cuda:1, cpu')
    parser.add_argument('--no-fp16', action='store_true', help='skip fp16 (very slow on a CPU)')
    parser.add_argument('--select', nargs='+', default=None,
                        help='run only the checks whose name contains one of these words (e.g. pipeline)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s')
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        print('no CUDA device here', file=sys.stderr)
        return 2
    print(f'torch {torch.__version__}, device {device}'
          + (f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''))
    failed = ran = 0
    with tempfile.TemporaryDirectory() as tmp:
        checks = pipeline_checks(device) + training_checks(device, Path(tmp))
        for name, check in checks:
            if (args.no_fp16 and 'fp16' in name) or (args.select and not any(word in name for word in args.select)):
                continue
            start, ran = time.perf_counter(), ran + 1
            try:
                result = f'ok    {check()}'
            except Exception as error:  # report every check, then fail at the end
                failed += 1
                result = f'FAIL  {type(error).__name__}: {error}'
                traceback.print_exc(limit=3)
            print(f'{name:<58} {time.perf_counter() - start:6.1f} s  {result}', flush=True)
    print(f'{ran - failed} passed, {failed} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
