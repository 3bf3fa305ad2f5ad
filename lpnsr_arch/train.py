"""Training entry point: BasicSR's ``train_pipeline`` with LPNSR's networks, datasets and models registered.

Usage (from the repository root; experiments/ and tb_logger/ are written there)::

    python lpnsr_arch/train.py -opt options/demo/train_rrdbnet_demo.yml [--auto_resume] [--debug]
    python -m lpnsr_arch.train -opt options/demo/train_rrdbnet_demo.yml

``dataroot_*`` paths in the YAML are relative to the current working directory (BasicSR's rule).
"""
from __future__ import annotations

import os.path as osp
import sys
from typing import List, Optional

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
if __package__ in (None, ''):
    # run as a plain script: sys.path[0] is lpnsr_arch/ (whose train.py/test.py/data/ would shadow other modules);
    # the repository root must come first instead, so that `import lpnsr_arch` works
    _SCRIPT_DIR = osp.dirname(osp.abspath(__file__))
    sys.path[:] = [p for p in sys.path if osp.abspath(p or '.') != _SCRIPT_DIR]
    sys.path.insert(0, REPO_ROOT)

import lpnsr_arch  # noqa: E402,F401  (shim first, then registers everything)
from lpnsr_arch.compat import install_basicsr_fixes  # noqa: E402


def run_basicsr_pipeline(pipeline_name: str, argv: Optional[List[str]], root_path: Optional[str]) -> None:
    """Run ``basicsr.<pipeline_name>`` (``train_pipeline``/``test_pipeline``) with ``argv`` as its command line.

    BasicSR parses ``sys.argv`` itself, so it is swapped for the call and restored afterwards.
    """
    install_basicsr_fixes()
    import basicsr.test
    import basicsr.train

    pipeline = {'train_pipeline': basicsr.train.train_pipeline, 'test_pipeline': basicsr.test.test_pipeline}
    if pipeline_name not in pipeline:
        raise ValueError(f'unknown BasicSR pipeline {pipeline_name!r}; expected one of {sorted(pipeline)}')
    args = sys.argv[1:] if argv is None else list(argv)
    saved_argv = sys.argv
    sys.argv = [pipeline_name, *args]
    try:
        pipeline[pipeline_name](osp.abspath(root_path or REPO_ROOT))
    finally:
        sys.argv = saved_argv


def main(argv: Optional[List[str]] = None, root_path: Optional[str] = None) -> None:
    """Train. ``argv``: BasicSR arguments (default ``sys.argv[1:]``); ``root_path``: where experiments/ goes
    (default: the repository root)."""
    run_basicsr_pipeline('train_pipeline', argv, root_path)


if __name__ == '__main__':
    main()
