"""Training entry point: BasicSR's ``train_pipeline`` with LPNSR's networks, datasets and models registered.

Usage (from the repository root)::

    python lpnsr_arch/train.py -opt options/demo/train_rrdbnet_demo.yml [--auto_resume] [--debug]
    python -m lpnsr_arch.train -opt options/demo/train_rrdbnet_demo.yml

``experiments/`` and ``tb_logger/`` are written in the repository (BasicSR's rule for its own ``train.py``), or in
the current folder when the package is a plain install. A relative ``-opt`` is looked up in the current folder, then
in the repository (or a plain install's data); ``dataroot_*`` paths in the YAML are relative to the current working
directory (BasicSR's rule).
"""
from __future__ import annotations

import logging
import os
import os.path as osp
import sys
from typing import List, NamedTuple, Optional, Tuple

REPO_ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
if __package__ in (None, ''):
    # run as a plain script: sys.path[0] is lpnsr_arch/ (whose train.py/test.py/data/ would shadow other modules);
    # the repository root must come first instead, so that `import lpnsr_arch` works
    _SCRIPT_DIR = osp.dirname(osp.abspath(__file__))
    sys.path[:] = [p for p in sys.path if osp.abspath(p or '.') != _SCRIPT_DIR]
    sys.path.insert(0, REPO_ROOT)

import yaml  # noqa: E402

import lpnsr_arch  # noqa: E402,F401  (shim first, then registers everything)
from lpnsr_arch.cli_errors import USER_ERRORS, user_errors  # noqa: E402
from lpnsr_arch.compat import install_basicsr_fixes  # noqa: E402

logger = logging.getLogger('lpnsr_arch.train')


def _find_opt(argv: List[str]) -> Optional[Tuple[int, str]]:
    """Where the ``-opt`` value of a BasicSR command line is (``-opt PATH``: the next argument; ``-opt=PATH``: that
    argument) and the value, or ``None``."""
    for index, arg in enumerate(argv):
        if arg == '-opt' and index + 1 < len(argv):
            return index + 1, argv[index + 1]
        if arg.startswith('-opt='):
            return index, arg[len('-opt='):]
    return None


def _opt_path(argv: List[str]) -> str:
    """The ``-opt`` value of a BasicSR command line (for error messages)."""
    found = _find_opt(argv)
    return found[1] if found else 'options'


class BasicSRRun(NamedTuple):
    """What a BasicSR command line asks for: the ``-opt`` file's options (overrides applied), ``--launcher`` and
    ``--auto_resume``."""
    opt: dict
    launcher: str
    auto_resume: bool


def read_options_as_basicsr(argv: List[str]) -> Optional[BasicSRRun]:
    """The options BasicSR will run with: the ``-opt`` file with the ``--force_yml key:key=value`` overrides applied
    (as BasicSR's ``parse_options``). Returns a :class:`BasicSRRun`, or ``None`` when there is no readable
    ``-opt`` file (BasicSR reports that itself). Raises ``yaml.YAMLError`` for a malformed file and ``KeyError``
    naming an override whose key does not exist."""
    import argparse

    from basicsr.utils.options import _postprocess_yml_value, ordered_yaml

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    parser.add_argument('--launcher', default='none')
    parser.add_argument('--force_yml', nargs='+')
    parser.add_argument('--auto_resume', action='store_true')
    args, _ = parser.parse_known_args(argv)
    if not args.opt or not osp.isfile(args.opt):
        return None
    with open(args.opt, encoding='utf-8') as handle:
        opt = yaml.load(handle, Loader=ordered_yaml()[0])
    if not isinstance(opt, dict):
        raise ValueError('the options file must hold a mapping of options')
    for entry in args.force_yml or []:  # BasicSR's rule: the parent keys must exist, the last one may be new
        keys, _, value = entry.partition('=')
        *parents, last = [key.strip() for key in keys.split(':')]
        block = opt
        for depth, key in enumerate(parents):
            if not isinstance(block, dict) or key not in block:
                raise KeyError(f"--force_yml {entry}: the options have no block {':'.join(parents[:depth + 1])}")
            block = block[key]
        if not isinstance(block, dict):
            raise KeyError(f"--force_yml {entry}: {':'.join(parents)} is not a block of options")
        block[last] = _postprocess_yml_value(value.strip())
    return BasicSRRun(opt, args.launcher, args.auto_resume)


def will_resume(run: BasicSRRun, root_path: str) -> bool:
    """Whether BasicSR will resume: ``path.resume_state`` is set, or ``--auto_resume`` finds a ``*.state`` file in
    ``<root_path>/experiments/<name>/training_states`` (BasicSR's rule)."""
    if (run.opt.get('path') or {}).get('resume_state'):
        return True
    states = osp.join(root_path, 'experiments', str(run.opt.get('name')), 'training_states')
    return run.auto_resume and osp.isdir(states) and any(name.endswith('.state') for name in os.listdir(states))


def check_options_before_start(pipeline_name: str, argv: List[str], root_path: str) -> None:
    """Check what BasicSR would only find after creating the experiment (or results) folder, and renaming an
    earlier one of the same name to ``*_archived_*``: for a model class with a ``check_options`` (the diffusion
    models), its options; for this plugin's models, that each ``path.pretrain_network_*`` file exists (when resuming,
    only those of ``path.ignore_resume_networks``: BasicSR loads the run's own files for the others); then the
    ``datasets`` block (:func:`lpnsr_arch.data.sources.check_dataset_options`:
    phases, registered types, folders, LMDBs, meta-info files). Raises an error whose message names the key."""
    import torch
    from basicsr.utils.registry import MODEL_REGISTRY

    from lpnsr_arch.data.degradation import training_gt_size, validate_degradation_opt
    from lpnsr_arch.data.sources import check_dataset_options
    from lpnsr_arch.weights import check_checkpoints_exist

    run = read_options_as_basicsr(argv)
    if run is None:
        return
    opt, launcher = run.opt, run.launcher
    is_train = pipeline_name == 'train_pipeline'
    model_type = opt.get('model_type')
    model_class = {name: cls for name, cls in MODEL_REGISTRY}.get(model_type) if isinstance(model_type, str) else None
    check = getattr(model_class, 'check_options', None)
    if check is not None:
        num_gpu = opt.get('num_gpu', 'auto')
        num_gpu = torch.cuda.device_count() if num_gpu == 'auto' else num_gpu  # as BasicSR's parse_options
        check(dict(opt, is_train=is_train, dist=launcher != 'none', num_gpu=num_gpu))
    if model_class is not None and model_class.__module__.startswith('lpnsr_arch.'):  # they load through weights
        path_opt = opt.get('path') or {}
        resumed_from_run = is_train and will_resume(run, root_path)
        # a resumed run loads its own files for every network but the ignored (frozen) ones
        check_checkpoints_exist(path_opt, (path_opt.get('ignore_resume_networks') or []) if resumed_from_run else None)
    check_dataset_options(opt.get('datasets'), is_train=is_train)
    train_set = (opt.get('datasets') or {}).get('train') or {}
    if is_train and str(train_set.get('type', '')).endswith('RealESRGANDataset'):  # pairs degraded in the model
        training_gt_size(opt)
        validate_degradation_opt(opt)


def resolve_opt_argument(argv: List[str]) -> List[str]:
    """``argv`` with its ``-opt`` file found as inference finds an options file (the current folder, then the
    repository or a plain install's data: :func:`lpnsr_arch.weights.resolve_project_file`). Raises
    ``FileNotFoundError`` naming the file and the places looked in; without ``-opt`` BasicSR reports it."""
    from lpnsr_arch.weights import resolve_project_file

    args = list(argv)
    found = _find_opt(args)
    if found is not None:
        index, value = found
        resolved = str(resolve_project_file(value, f'options file {value}'))
        args[index] = resolved if args[index] == value else f'-opt={resolved}'
    return args


def run_basicsr_pipeline(pipeline_name: str, argv: Optional[List[str]], root_path: Optional[str]) -> None:
    """Run ``basicsr.<pipeline_name>`` (``train_pipeline``/``test_pipeline``) with ``argv`` as its command line.

    ``root_path``: where ``experiments/`` or ``results/`` go (default :func:`lpnsr_arch.weights.default_run_root`:
    the repository, or the current folder for a plain install). BasicSR parses ``sys.argv`` itself, so it is swapped
    for the call and restored afterwards.
    """
    from lpnsr_arch.weights import default_run_root

    install_basicsr_fixes()
    import basicsr.test
    import basicsr.train

    pipeline = {'train_pipeline': basicsr.train.train_pipeline, 'test_pipeline': basicsr.test.test_pipeline}
    if pipeline_name not in pipeline:
        raise ValueError(f'unknown BasicSR pipeline {pipeline_name!r}; expected one of {sorted(pipeline)}')
    args = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(format='%(levelname)s %(message)s')  # for the ERROR line; BasicSR's logger is its own
    root_path = osp.abspath(root_path or default_run_root())
    with user_errors(logger, f'{_opt_path(args)}: ', USER_ERRORS + (yaml.YAMLError,)):
        args = resolve_opt_argument(args)
        check_options_before_start(pipeline_name, args, root_path)
    saved_argv = sys.argv
    sys.argv = [pipeline_name, *args]
    try:
        pipeline[pipeline_name](root_path)
    finally:
        sys.argv = saved_argv


def main(argv: Optional[List[str]] = None, root_path: Optional[str] = None) -> None:
    """Train. ``argv``: BasicSR arguments (default ``sys.argv[1:]``); ``root_path``: where experiments/ goes
    (default: the repository root; the current folder for a plain install)."""
    run_basicsr_pipeline('train_pipeline', argv, root_path)


if __name__ == '__main__':
    main()
