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


def check_training_options(argv: List[str]) -> None:
    """Run the model class's ``check_options`` (when it has one: the diffusion models) on the ``-opt`` file before
    BasicSR starts: a mistake it finds is raised before BasicSR creates the experiment folder (and renames an
    earlier one of the same name to ``*_archived_*``). Skipped with ``--force_yml`` (it may mend the file) and when
    the file cannot be read (BasicSR reports that itself)."""
    import argparse

    import torch
    import yaml
    from basicsr.utils.options import ordered_yaml
    from basicsr.utils.registry import MODEL_REGISTRY

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    parser.add_argument('--launcher', default='none')
    parser.add_argument('--force_yml', nargs='+')
    args, _ = parser.parse_known_args(argv)
    if args.force_yml or not args.opt or not osp.isfile(args.opt):
        return
    with open(args.opt, encoding='utf-8') as handle:
        opt = yaml.load(handle, Loader=ordered_yaml()[0])
    model_type = opt.get('model_type') if isinstance(opt, dict) else None
    model_class = {name: cls for name, cls in MODEL_REGISTRY}.get(model_type) if isinstance(model_type, str) else None
    check = getattr(model_class, 'check_options', None)
    if check is None:
        return
    num_gpu = opt.get('num_gpu', 'auto')
    num_gpu = torch.cuda.device_count() if num_gpu == 'auto' else num_gpu  # as BasicSR's parse_options
    check(dict(opt, is_train=True, dist=args.launcher != 'none', num_gpu=num_gpu))


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
    if pipeline_name == 'train_pipeline':
        check_training_options(args)
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
