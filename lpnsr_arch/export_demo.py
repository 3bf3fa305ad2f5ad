"""Export the demonstration model's EMA weights from ``experiments/`` to ``weights/demo/*.safetensors``.

Run by ``scripts/train_demo_model.sh`` after the stages of ``options/demo_model/`` have trained (the later phases of
a stage, ``NNb``, ``NNc``, ..., continue the one before; each stage's last phase is the run exported)::

    python -m lpnsr_arch.export_demo --out weights/demo
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional

from lpnsr_arch.weights import CheckpointError, read_state_dict, save_state_dict

logger = logging.getLogger(__name__)

# shipped file name -> the training run whose latest EMA weights it holds
DEMO_STAGES: Dict[str, str] = {
    'upsampler_rrdbnet.safetensors': 'demo_model_1b_upsampler_RRDBNet',
    'denoiser_resshift.safetensors': 'demo_model_2b_denoiser_ResShift',
    'noise_predictor_lpnsr.safetensors': 'demo_model_3d_noise_predictor_LPNSR',
}


def export_demo(*, experiments: Path, out: Path) -> List[Path]:
    """Copy ``params_ema`` of each stage's ``net_g_latest.pth`` into a flat safetensors file; returns the paths.

    Every stage is read before any file is written: the stages belong together (each was trained on the outputs of
    the ones before it), so a missing or unreadable run leaves the shipped set as it was.
    """
    states = {}
    for file_name, run in DEMO_STAGES.items():
        states[file_name] = read_state_dict(experiments / run / 'models' / 'net_g_latest.pth', param_key='params_ema')
    written = []
    for file_name, run in DEMO_STAGES.items():
        written.append(save_state_dict(out / file_name, states[file_name],
                                       metadata={'source': f'{run}/net_g_latest.pth'}))
        logger.info('%s <- %s/models/net_g_latest.pth (%d tensors)', out / file_name, run, len(states[file_name]))
    return written


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--experiments', type=Path, default=Path('experiments'))
    parser.add_argument('--out', type=Path, default=Path('weights/demo'))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    try:
        export_demo(experiments=args.experiments, out=args.out)
    except CheckpointError as err:
        logger.error('export stopped, nothing written: %s', err)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
