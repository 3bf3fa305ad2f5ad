"""Test entry point: BasicSR's ``test_pipeline`` with LPNSR's networks, datasets and models registered.

Usage (from the repository root; results/ is written there, or in the current folder for a plain install)::

    python lpnsr_arch/test.py -opt options/test_X.yml
    python -m lpnsr_arch.test -opt options/test_X.yml
"""
from __future__ import annotations

import os.path as osp
import sys
from typing import List, Optional

if __package__ in (None, ''):
    # run as a plain script: sys.path[0] is lpnsr_arch/ (whose train.py/test.py/data/ would shadow other modules);
    # the repository root must come first instead, so that `import lpnsr_arch` works
    _SCRIPT_DIR = osp.dirname(osp.abspath(__file__))
    sys.path[:] = [p for p in sys.path if osp.abspath(p or '.') != _SCRIPT_DIR]
    sys.path.insert(0, osp.dirname(_SCRIPT_DIR))

from lpnsr_arch.train import run_basicsr_pipeline  # noqa: E402


def main(argv: Optional[List[str]] = None, root_path: Optional[str] = None) -> None:
    """Test. ``argv``: BasicSR arguments (default ``sys.argv[1:]``); ``root_path``: where results/ goes
    (default: the repository root; the current folder for a plain install)."""
    run_basicsr_pipeline('test_pipeline', argv, root_path)


if __name__ == '__main__':
    main()
