"""Two processes (gloo, CPU) of one distributed ResShift run: a non-finite loss on one rank skips the step on all.

BasicSR's ``model_to_device`` wraps DDP around CUDA devices only, so the test wraps the networks in a plain CPU DDP.
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

TESTS = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def _rank_main(rank: int, root: str, port: int) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=2, timeout=datetime.timedelta(seconds=30))
    sys.path.insert(0, str(TESTS))
    import lpnsr_arch  # noqa: F401
    from basicsr.models.base_model import BaseModel
    from torch.nn.parallel import DistributedDataParallel

    from lpnsr_arch.models.resshift_model import ResShiftModel
    from test_resshift_model import fixed_batch, make_opt

    BaseModel.model_to_device = lambda self, net: DistributedDataParallel(net.to(self.device))
    opt = make_opt(Path(root) / f'rank{rank}')
    opt.update(dist=True, rank=rank, world_size=2)
    torch.manual_seed(0)
    model = ResShiftModel(opt)
    logs = []
    for iteration in (1, 2):
        batch = fixed_batch()
        if rank == 1 and iteration == 1:
            batch['gt'] = batch['gt'].clone()
            batch['gt'][0, 0, 0, 0] = float('nan')
        model.feed_data(batch)
        model.optimize_parameters(iteration)
        logs.append({name: float(value) for name, value in model.log_dict.items()})
    (Path(root) / f'rank{rank}.json').write_text(json.dumps(logs))
    dist.barrier()
    os._exit(0)  # skip the interpreter's teardown, where gloo's threads sometimes abort (SIGABRT) after the work


def test_a_non_finite_loss_on_one_rank_skips_the_step_on_every_rank(tmp_path):
    mp.spawn(_rank_main, args=(str(tmp_path), _free_port()), nprocs=2, join=True)
    logs = [json.loads((tmp_path / f'rank{rank}.json').read_text()) for rank in (0, 1)]
    assert [log[0] for log in logs] == [{'skipped_steps': 1.0}] * 2  # rank 0's loss was finite: it skipped too
    assert 'l_mse' in logs[0][1] and logs[0][1] == logs[1][1]  # and both went on in step
