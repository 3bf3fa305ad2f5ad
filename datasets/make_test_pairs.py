"""Make fixed-seed LR/HR test pairs from any HR folder: ``<out>/gt/<name>.png`` and ``<out>/lq/<name>.png``.

``--degradation realesrgan`` uses the same second-order degradation as training
(:class:`lpnsr_arch.data.degradation.SecondOrderDegradation`, kernels from ``LPNSRRealESRGANDataset``); its settings
are Real-ESRGAN x4plus unless ``--opt`` names a training recipe (top-level degradation keys, ``datasets.train``
kernel keys). ``--degradation bicubic`` uses BasicSR's MATLAB-style bicubic. Image ``i`` is made with seed
``--seed + i``, so each pair does not depend on the others. GT images are cropped to a multiple of the scale.

Everything is checked before the first pair is written (``--hr`` and each of its images, ``--opt``, ``--out``): a
user mistake ends the script with one ``ERROR`` line naming the option or the file, and exit status 2.

Example::

    python datasets/make_test_pairs.py --hr datasets/demo/val_hr --out datasets/demo/val_x4 --degradation realesrgan
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))
import lpnsr_arch  # noqa: E402,F401  (torchvision shim before BasicSR)
from lpnsr_arch.cli_errors import ArgumentParser, positive_int, user_errors  # noqa: E402
from lpnsr_arch.data.test_pairs import DEGRADATIONS, prepare_test_pairs, write_test_pairs  # noqa: E402

LOGGER = logging.getLogger('make_test_pairs')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line (a bad value is one ``error:`` line and exit status 2)."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--hr', required=True, help='HR image folder (scanned recursively)')
    parser.add_argument('--out', required=True, help='output folder; gt/ and lq/ are written inside')
    parser.add_argument('--degradation', choices=DEGRADATIONS, default='realesrgan')
    parser.add_argument('--scale', type=positive_int, default=4, help='downscaling factor')
    parser.add_argument('--seed', type=int, default=0, help='image i uses seed + i')
    parser.add_argument('--opt', default=None, help='training YAML whose degradation settings to use (realesrgan)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Run the script; returns the pair names. A user mistake is one ERROR line and ``SystemExit(2)``."""
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    args = parse_args(argv)
    with user_errors(LOGGER):
        source = prepare_test_pairs(hr=args.hr, out=args.out, degradation_name=args.degradation, scale=args.scale,
                                    recipe_path=args.opt)
    with user_errors(LOGGER, types=(OSError, )):
        names = write_test_pairs(source, hr=args.hr, out=args.out, degradation_name=args.degradation,
                                 scale=args.scale, seed=args.seed)
    LOGGER.info('wrote %d %s x%d pairs to %s', len(names), args.degradation, args.scale, args.out)
    return names


if __name__ == '__main__':
    main()
