"""Export the demonstration model's EMA weights from ``experiments/`` to ``weights/demo/*.safetensors``.

Run by ``scripts/train_demo_model.sh`` after the stages of ``options/demo_model/`` have trained (the runs exported
are those of :data:`DEMO_STAGES`); ``--run`` exports other training runs instead, each to a file of its own
(``scripts/gpu_train_*.sh``)::

    python -m lpnsr_arch.export_demo --out weights/demo
    python -m lpnsr_arch.export_demo --out $OUT --run probe_swinir_5_noise_predictor   # -> $OUT/<run>.safetensors
    python -m lpnsr_arch.export_demo --out $OUT --run RUN_A RUN_B                     # each run alone
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from lpnsr_arch.weights import CheckpointError, StateDict, read_state_dict, save_state_dict, without_derived_buffers

logger = logging.getLogger(__name__)

# shipped file name -> the training run whose last saved EMA weights it holds
DEMO_STAGES: Dict[str, str] = {
    'upsampler_rrdbnet.safetensors': 'demo_model_1b_upsampler_RRDBNet',
    'denoiser_resshift.safetensors': 'demo_model_2b_denoiser_ResShift',
    'noise_predictor_lpnsr.safetensors': 'demo_model_3d_noise_predictor_LPNSR',
}


def _numbered_checkpoints(models: Path) -> List[Path]:
    """The periodic saves ``net_g_<iter>.pth`` in ``models``, oldest first."""
    numbered = [p for p in models.glob('net_g_*.pth') if re.fullmatch(r'net_g_\d+\.pth', p.name)]
    return sorted(numbered, key=lambda p: int(p.stem.rsplit('_', 1)[1]))


def last_checkpoint(models: Path) -> Path:
    """``models/net_g_latest.pth`` (written when a run ends), else the highest-numbered ``net_g_<iter>.pth`` (a run
    stopped early: its last periodic save). Raises :class:`CheckpointError` naming the folder when there is none."""
    latest = models / 'net_g_latest.pth'
    if latest.is_file():
        return latest
    numbered = _numbered_checkpoints(models)
    if not numbered:
        raise CheckpointError(f'{models}: no net_g_latest.pth nor any net_g_<iter>.pth (has the run trained?)')
    logger.warning('%s: no net_g_latest.pth (the run stopped early): exporting %s', models, numbered[-1].name)
    return numbered[-1]


def read_ema_weights(checkpoint: Path) -> StateDict:
    """The ``params_ema`` of a BasicSR training checkpoint without the Swin buffers the networks rebuild
    (``attn_mask``, ``relative_position_index``: more than half of a small SwinIR's file, 2.3 MB -> 1.0 MB)."""
    return without_derived_buffers(read_state_dict(checkpoint, param_key='params_ema'))


def read_last_ema_weights(models: Path) -> Tuple[Path, StateDict]:
    """The checkpoint :func:`last_checkpoint` picks and its EMA weights. A run stopped at a time limit can be killed
    while it writes a periodic save: when the last ``net_g_<iter>.pth`` cannot be read, the save before it is read
    instead (a warning names both). ``net_g_latest.pth``, written when a run ends, has no such fallback."""
    last = last_checkpoint(models)
    try:
        return last, read_ema_weights(last)
    except CheckpointError as err:
        earlier = _numbered_checkpoints(models)[:-1] if last.name != 'net_g_latest.pth' else []
        if not earlier:
            raise
        logger.warning('%s\n  (cut short while it was written?): exporting %s instead', err, earlier[-1].name)
        return earlier[-1], read_ema_weights(earlier[-1])


def export_runs(runs: Dict[str, str], *, experiments: Path, out: Path) -> List[Path]:
    """Write ``params_ema`` of each run's last checkpoint (:func:`read_last_ema_weights`) to ``out/<file name>``, flat
    safetensors, for ``runs`` = {file name: run}; returns the paths.

    Every run is read before any file is written: the demonstration stages belong together (each was trained on the
    outputs of the ones before it), so a missing or unreadable run leaves the shipped set as it was.
    """
    read = {name: read_last_ema_weights(experiments / run / 'models') for name, run in runs.items()}
    sources = {name: source for name, (source, _) in read.items()}
    states = {name: state for name, (_, state) in read.items()}
    written = []
    for name, run in runs.items():
        source = f'{run}/{sources[name].name}'
        written.append(save_state_dict(out / name, states[name], metadata={'source': source}))
        logger.info('%s <- %s (%d tensors)', out / name, source, len(states[name]))
    return written


def export_demo(*, experiments: Path, out: Path) -> List[Path]:
    """:func:`export_runs` of :data:`DEMO_STAGES`: the shipped set."""
    return export_runs(DEMO_STAGES, experiments=experiments, out=out)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--experiments', type=Path, default=Path('experiments'),
                        help="BasicSR's experiments folder holding the runs (default: experiments, in the current "
                             "folder)")
    parser.add_argument('--out', type=Path, default=Path('weights/demo'), help='output folder (default weights/demo)')
    parser.add_argument('--run', nargs='+', metavar='RUN',
                        help='export these runs instead, each alone to <out>/<run>.safetensors (a run that cannot '
                             'be read is reported and skipped; the others are still written); default: the '
                             'shipped set, all or nothing')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    if not args.run:
        try:
            export_demo(experiments=args.experiments, out=args.out)
        except CheckpointError as err:
            logger.error('export stopped, nothing written: %s', err)
            return 2
        return 0
    failed = []
    for run in args.run:
        try:
            export_runs({f'{run}.safetensors': run}, experiments=args.experiments, out=args.out)
        except CheckpointError as err:
            logger.error('%s not exported: %s', run, err)
            failed.append(run)
    if failed:
        logger.error('%d of %d runs not exported: %s', len(failed), len(args.run), ' '.join(failed))
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
