"""Compatibility fixes applied before anything imports BasicSR.

BasicSR 1.4.2 (the last PyPI release) imports ``torchvision.transforms.functional_tensor``, which torchvision >= 0.17
removed; the same code lives on as ``torchvision.transforms._functional_tensor``. :func:`install_torchvision_shim`
registers it under the old name. It must run before the first ``import basicsr`` of any kind, which is why
``lpnsr_arch/__init__.py`` calls it first. :func:`install_distutils_shim` does the same for ``distutils`` (gone in
Python 3.12; setuptools carries it).

:func:`install_basicsr_fixes` adds the device-agnostic fixes BasicSR 1.4.2 itself needs (resume without CUDA, a
contiguous DiffJPEG output for the CPU ``filter2D``); it imports BasicSR, so it runs after the shim.
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
import types
from typing import Optional

_OLD_NAME = 'torchvision.transforms.functional_tensor'


def install_torchvision_shim() -> None:
    """Make ``import torchvision.transforms.functional_tensor`` work on current torchvision (idempotent)."""
    if _OLD_NAME in sys.modules:
        return
    try:
        importlib.import_module(_OLD_NAME)
        return
    except ImportError:
        pass
    import torchvision.transforms
    try:
        module = importlib.import_module('torchvision.transforms._functional_tensor')
    except ImportError:  # pragma: no cover - the private module disappeared: keep the one function BasicSR uses
        from torchvision.transforms.functional import rgb_to_grayscale
        module = types.ModuleType(_OLD_NAME)
        module.rgb_to_grayscale = rgb_to_grayscale
    sys.modules[_OLD_NAME] = module
    torchvision.transforms.functional_tensor = module


def install_distutils_shim() -> None:
    """Make ``import distutils.version`` (BasicSR 1.4.2's ``arch_util``) work on Python >= 3.12, which removed
    ``distutils``: setuptools carries a copy and registers it when imported (idempotent)."""
    try:
        importlib.import_module('distutils.version')
        return
    except ModuleNotFoundError:
        pass
    try:
        import setuptools  # noqa: F401  (registers its bundled distutils)
    except ImportError as error:
        raise ImportError('BasicSR 1.4.2 imports distutils, which this Python lacks: pip install setuptools') from error
    importlib.import_module('distutils.version')


# ---------------------------------------------------------------------------------------------------------------------
# Device-agnostic fixes for BasicSR 1.4.2 itself. They import BasicSR, so they must run *after* the shim above.
# ---------------------------------------------------------------------------------------------------------------------
_PATCHED_MARK = '_lpnsr_patched'


def resume_map_location(opt: dict) -> str:
    """Device onto which a ``.state`` file is loaded: ``'cuda:<current>'`` with GPUs in use, else ``'cpu'``."""
    import torch

    if opt.get('num_gpu', 0) == 0 or not torch.cuda.is_available():
        return 'cpu'
    return f'cuda:{torch.cuda.current_device()}'


def find_latest_training_state(state_dir: str) -> Optional[str]:
    """Path of the ``<iter>.state`` file with the largest iteration in ``state_dir`` (None if there is none)."""
    if not os.path.isdir(state_dir):
        return None
    iterations = [int(float(name[:-len('.state')])) for name in os.listdir(state_dir) if name.endswith('.state')]
    if not iterations:
        return None
    return os.path.join(state_dir, f'{max(iterations)}.state')


def load_resume_state(opt: dict) -> Optional[dict]:
    """Replacement for ``basicsr.train.load_resume_state`` that works without CUDA.

    Upstream calls ``torch.cuda.current_device()`` unconditionally and looks for ``--auto_resume`` states under the
    CWD-relative ``experiments/``. This version maps storages to :func:`resume_map_location` and searches
    ``opt['path']['training_states']`` (``<root_path>/experiments/<name>/training_states``).
    """
    import torch
    from basicsr.utils import check_resume

    resume_state_path = None
    if opt.get('auto_resume'):
        state_dir = opt['path'].get('training_states') or os.path.join(
            opt['root_path'], 'experiments', opt['name'], 'training_states')
        resume_state_path = find_latest_training_state(state_dir)
        if resume_state_path is not None:
            opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']
        if not os.path.isfile(resume_state_path):
            raise FileNotFoundError(f"path.resume_state: no such training state file: '{resume_state_path}'")

    if resume_state_path is None:
        return None
    resume_state = torch.load(resume_state_path, map_location=resume_map_location(opt))
    # check_resume turns every path.param_key_* 'params_ema' into 'params', those of the networks that are not
    # resumed (ignore_resume_networks: the frozen ones, still read from their own files) included: keep theirs
    frozen_keys = {key: opt['path'][key] for key in
                   (f"param_key_{name[len('network_'):]}" for name in opt['path'].get('ignore_resume_networks') or [])
                   if key in opt['path']}
    check_resume(opt, resume_state['iter'])
    opt['path'].update(frozen_keys)
    return resume_state


def install_resume_fix() -> None:
    """Point ``basicsr.train.load_resume_state`` (used by ``train_pipeline``) at :func:`load_resume_state`."""
    import basicsr.train

    basicsr.train.load_resume_state = load_resume_state


def install_contiguous_diffjpeg() -> None:
    """Make ``basicsr.utils.DiffJPEG`` return a contiguous tensor (idempotent).

    DiffJPEG's last permute leaves a channels-last stride; on CPU ``F.pad(mode='reflect')`` keeps it and the
    ``view`` inside ``img_process_util.filter2D`` then fails with "view size is not compatible".
    """
    from basicsr.utils.diffjpeg import DiffJPEG

    if getattr(DiffJPEG.forward, _PATCHED_MARK, False):
        return
    original_forward = DiffJPEG.forward

    @functools.wraps(original_forward)
    def contiguous_forward(self, x, quality):
        return original_forward(self, x, quality).contiguous()

    setattr(contiguous_forward, _PATCHED_MARK, True)
    DiffJPEG.forward = contiguous_forward


def install_basicsr_fixes() -> None:
    """Apply every BasicSR fix: the torchvision and distutils shims, the CPU-safe resume and the contiguous DiffJPEG
    (idempotent)."""
    install_torchvision_shim()
    install_distutils_shim()
    install_resume_fix()
    install_contiguous_diffjpeg()
