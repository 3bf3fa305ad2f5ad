"""Where the training and test images come from: image-folder scans and the checks of every ``datasets`` block.

:func:`check_dataset_options` runs in ``lpnsr_arch/train.py`` and ``lpnsr_arch/test.py`` before BasicSR starts, so a
mistake in a ``datasets`` block (a misspelt ``type``, a missing folder or meta-info file, an empty folder, an LMDB
path without ``.lmdb``) is one error naming the key and the path, raised before BasicSR creates the experiment
folder (and archives an earlier one of the same name). The datasets' own constructors run the same
:func:`check_data_sources`.
"""
from __future__ import annotations

import difflib
import os
from typing import Iterator, List, Mapping

from lpnsr_arch.imageio import IMAGE_EXTENSIONS

__all__ = ['scan_image_folder', 'folder_holds_files', 'check_data_sources', 'check_dataset_options']

LMDB_FILES = ('data.mdb', 'meta_info.txt')
"""What BasicSR's ``lmdb_util`` writes into an ``*.lmdb`` folder and its LMDB backend reads."""


def _file_paths(folder: str, *, images_only: bool = True) -> Iterator[str]:
    """Paths of the files under ``folder`` relative to it, in walk order: recursive, into symlinked folders too (as
    BasicSR's ``scandir``: a DF2K folder is often links to DIV2K and Flickr2K), hidden names skipped (as ``scandir``:
    e.g. macOS ``._*`` files); ``images_only``: extensions of :data:`lpnsr_arch.imageio.IMAGE_EXTENSIONS` in any
    case."""
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(name for name in dirs if not name.startswith('.'))
        for name in sorted(files):
            if name.startswith('.'):
                continue
            if not images_only or os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                yield os.path.relpath(os.path.join(root, name), folder)


def scan_image_folder(folder: str) -> List[str]:
    """Relative paths of every image under ``folder`` (see :func:`_file_paths`), sorted."""
    return sorted(_file_paths(folder))


def folder_holds_files(folder: str, *, images_only: bool = True) -> bool:
    """Whether ``folder`` holds at least one image (``images_only=False``: any file); stops at the first, so it is
    cheap on a large dataset."""
    return next(_file_paths(folder, images_only=images_only), None) is not None


def _check_lmdb(path: str, where: str) -> None:
    if not path.endswith('.lmdb'):
        raise ValueError(f"{where}: an LMDB path must end with '.lmdb', got '{path}'")
    missing = [name for name in LMDB_FILES if not os.path.isfile(os.path.join(path, name))]
    if missing:
        raise FileNotFoundError(f"{where}: '{path}' is not an LMDB made by BasicSR's lmdb_util (it lacks "
                                f"{' and '.join(missing)}; see datasets/README.md)")
    with open(os.path.join(path, 'meta_info.txt'), encoding='utf-8') as meta_file:
        if not any(line.strip() for line in meta_file):
            raise ValueError(f"{where}: LMDB '{path}' is empty (meta_info.txt lists no image)")


def check_data_sources(opt: Mapping, *, where: str = '', images_only: bool = True) -> None:
    """Raise an error naming the key and the path when a dataset block cannot provide images.

    ``opt``: one ``datasets.<phase>`` block. Every ``dataroot_*`` must be an existing folder: with
    ``io_backend.type: lmdb`` an ``*.lmdb`` folder holding ``data.mdb`` and a non-empty ``meta_info.txt``; with
    ``disk`` and no meta-info file, a folder holding at least one image (``images_only=False``: one file, as
    BasicSR's folder datasets take any file), and every ``meta_info`` / ``meta_info_file`` given must be an existing
    file (an LMDB reads its own). Other backends (``memcached``) are not checked. Relative paths are read from the
    current folder (BasicSR's rule). ``where`` prefixes the messages (default ``dataset '<name>'``). Raises
    ``KeyError``, ``FileNotFoundError``, ``NotADirectoryError`` or ``ValueError``.
    """
    where = where or f"dataset '{opt.get('name', '?')}'"
    backend = opt.get('io_backend')
    if not isinstance(backend, Mapping) or 'type' not in backend:
        raise KeyError(f"{where}: option io_backend (a block with a type: disk or lmdb) is required")
    roots = {key: value for key, value in opt.items() if key.startswith('dataroot_') and value is not None}
    if not roots:
        raise KeyError(f'{where}: no dataroot_* option (e.g. dataroot_gt) names the images')
    if backend['type'] not in ('disk', 'lmdb'):
        return
    meta_keys = [key for key in ('meta_info', 'meta_info_file') if opt.get(key) is not None]
    for key in meta_keys if backend['type'] == 'disk' else ():
        if not os.path.isfile(os.path.expanduser(str(opt[key]))):
            raise FileNotFoundError(f"{where}: {key} '{opt[key]}' does not exist (relative paths are read from "
                                    f"{os.getcwd()})")
    for key, root in roots.items():
        root = os.path.expanduser(str(root))
        if not os.path.exists(root):
            raise FileNotFoundError(f"{where}: {key} '{root}' does not exist (relative paths are read from "
                                    f'{os.getcwd()})')
        if not os.path.isdir(root):
            raise NotADirectoryError(f"{where}: {key} '{root}' is a file, not a folder")
        if backend['type'] == 'lmdb':
            _check_lmdb(root, f'{where}: {key}')
        elif not meta_keys and not folder_holds_files(root, images_only=images_only):
            what = f"no image ({', '.join(IMAGE_EXTENSIONS)})" if images_only else 'no file'
            raise ValueError(f"{where}: {key} '{root}' holds {what}")


def check_dataset_options(datasets: object, *, is_train: bool) -> None:
    """Check an options file's ``datasets`` block before BasicSR starts: each phase name (training: ``train`` or
    ``val*``, as BasicSR's ``train_pipeline`` reads them), each ``type`` registered in BasicSR's
    ``DATASET_REGISTRY``, and each block's sources (:func:`check_data_sources`). Raises an error naming
    ``datasets.<phase>`` and what is wrong."""
    from basicsr.utils.registry import DATASET_REGISTRY

    if not isinstance(datasets, Mapping) or not datasets:
        raise KeyError('option datasets (a block with one entry per phase, e.g. train: and val:) is required')
    registered = sorted(name for name, _ in DATASET_REGISTRY)
    for phase, block in datasets.items():
        where = f'datasets.{phase}'
        if is_train and phase != 'train' and str(phase).split('_')[0] != 'val':
            raise KeyError(f"{where}: a training run reads the phases 'train' and 'val' / 'val_*' only")
        if not isinstance(block, Mapping):
            raise ValueError(f'{where} must be a block of options, got {block!r}')
        dataset_type = block.get('type')
        if dataset_type not in registered:
            close = difflib.get_close_matches(str(dataset_type), registered, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else f'; registered: {", ".join(registered)}'
            raise KeyError(f"{where}.type: no dataset named '{dataset_type}' is registered{hint}")
        # this plugin's dataset scans for images; BasicSR's folder datasets take every file
        check_data_sources(block, where=where, images_only=dataset_type == 'LPNSRRealESRGANDataset')
