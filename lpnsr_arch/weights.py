"""The one checkpoint loader and saver.

Reads every format the official LPNSR/ResShift/SwinIR releases and BasicSR use: flat state dicts, wrappers
(``params_ema`` / ``params`` / ``state_dict`` / ``ema_state`` / ``model``), ``module.`` and ``_orig_mod.`` prefixes
(DDP, ``torch.compile``), and safetensors. ``.pth`` files are always read with ``weights_only=True``: a checkpoint
can never run code. Mismatches raise :class:`CheckpointError` listing the missing, unexpected and mis-shaped keys.
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from lpnsr_arch.messages import name_list

logger = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]
"""The folder above the package: the repository checkout in an editable install (``pip install -e .``), where the
options, the shipped ``weights/demo`` and ``experiments/`` live; ``site-packages`` in a plain install."""


def _installed_data_folder() -> Path:
    """Where a plain (non-editable) install put ``options/`` and ``weights/demo/`` (``setup.py``'s ``data_files``,
    under the scheme's data prefix: ``sys.prefix`` in a virtual environment, ``site.USER_BASE`` for ``--user``,
    ``/usr/local`` for some system Pythons), found through the install record; ``sys.prefix/share/lpnsr_arch`` when
    the record has none (an editable install)."""
    marker = ('share', 'lpnsr_arch', 'options', 'inference_lpnsr_official.yml')
    try:
        files = importlib.metadata.distribution('lpnsr_arch').files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if tuple(file.parts[-len(marker):]) == marker:
            return Path(str(file.locate())).resolve().parents[1]
    return Path(sys.prefix) / 'share' / 'lpnsr_arch'


INSTALLED_DATA = _installed_data_folder()
"""The data folder of a plain install (:func:`_installed_data_folder`); relative paths fall back to it."""

StateDict = Dict[str, Tensor]
WRAPPER_KEYS = ('params_ema', 'params', 'state_dict', 'ema_state', 'model')
PREFIXES = ('module.', '_orig_mod.')
# Buffers that the official Swin layers store but recompute (or never read): tolerated when absent or extra.
DERIVED_BUFFER_SUFFIXES = ('attn_mask', 'relative_position_index')


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that does not fit the network."""


def read_checkpoint_file(path: Union[str, os.PathLike]) -> object:
    """Read a ``.safetensors`` file or a torch file (``weights_only=True``); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint file not found: {path}')
    if path.suffix.lower() == '.safetensors':
        from safetensors.torch import load_file
        try:
            return load_file(str(path), device='cpu')
        except Exception as err:  # safetensors raises several error types for corrupt headers
            raise CheckpointError(f'{path}: not a readable safetensors file ({err})') from err
    try:
        return torch.load(str(path), map_location='cpu', weights_only=True)
    except Exception as err:  # torch.load raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise CheckpointError(f'{path}: cannot be loaded as a weights-only torch checkpoint (truncated, corrupt, not '
                              f'a checkpoint, or it pickles objects other than tensors): {_torch_load_reason(err)}'
                              ) from err


def _torch_load_reason(error: Exception) -> str:
    """The part of a ``torch.load`` error that says what is wrong with the file: the unpickler's own complaint,
    without the advice paragraphs that torch wraps around a weights-only failure."""
    text = str(error)
    if 'WeightsUnpickler error:' in text:
        detail = text.split('WeightsUnpickler error:', 1)[1].strip().split('\n\n')[0].strip()
        return f'weights-only unpickler: {detail}'
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def is_checkout(root: Optional[Path] = None) -> bool:
    """``root`` (default :data:`REPO_ROOT`) is this project's repository (it holds ``setup.py`` and the package),
    not the ``site-packages`` of a plain install."""
    root = REPO_ROOT if root is None else root
    return (root / 'setup.py').is_file() and (root / 'lpnsr_arch').is_dir()


def project_folders() -> List[Path]:
    """Where a relative options or checkpoint path is looked up after the current folder: the repository checkout
    (editable install), then the data of a plain install (:data:`INSTALLED_DATA`), those that exist."""
    folders = [REPO_ROOT] if is_checkout() else []
    return folders + ([INSTALLED_DATA] if INSTALLED_DATA.is_dir() else [])


def default_run_root() -> Path:
    """Where BasicSR's ``experiments/`` and ``results/`` go by default: the repository checkout (BasicSR's own rule
    for its ``train.py``), or the current folder for a plain install (never ``site-packages``)."""
    return REPO_ROOT if is_checkout() else Path.cwd()


def find_project_file(value: Union[str, os.PathLike], *, current_folder: bool = True) -> Optional[Path]:
    """The file ``value``, or ``None``: as given (``~`` expanded; a relative path from the current folder), else a
    relative path from one of :func:`project_folders` (e.g. the shipped ``options/demo/...`` or ``weights/demo/...``).
    ``current_folder=False``: one of the project's own files (a relative path), from the project folders only."""
    path = Path(os.path.expanduser(str(value)))  # an unknown ~user stays as written (Path.expanduser raises)
    if current_folder or path.is_absolute():
        if path.is_file():
            return path
        if path.is_absolute():
            return None
    return next((folder / path for folder in project_folders() if (folder / path).is_file()), None)


def project_file_places(*, current_folder: bool = True) -> str:
    """Where :func:`find_project_file` looks for a relative path, for an error message: "looked in ..." and, when the
    package is neither a checkout nor a plain install with its data, what to do."""
    folders = project_folders()
    places = []
    if current_folder:
        places.append('the current folder' + ('' if Path.cwd().resolve() in [f.resolve() for f in folders]
                                              else f' {Path.cwd()}'))
    places += [f'the repository {f}' if f == REPO_ROOT else f'the installed data {f}' for f in folders]
    parts = [f'looked in {", ".join(places)}'] if places else []
    if not folders:
        parts.append(f'{REPO_ROOT} is not the repository and no installed data was found at {INSTALLED_DATA}: '
                     'install with `pip install -e .` from a clone' + (', or give the full path' if current_folder
                                                                        else ''))
    return '; '.join(parts)


def resolve_project_file(value: Union[str, os.PathLike], description: str, *, current_folder: bool = True) -> Path:
    """The file ``value``, found by :func:`find_project_file`. Raises ``FileNotFoundError`` "<description> does not
    exist (looked in ...)" naming every place looked in (:func:`project_file_places`), or "<description> is not a
    file" for a folder."""
    found = find_project_file(value, current_folder=current_folder)
    if found is not None:
        return found
    path = Path(os.path.expanduser(str(value)))
    if (current_folder or path.is_absolute()) and path.exists():
        raise FileNotFoundError(f'{description} is not a file')
    if path.is_absolute():
        raise FileNotFoundError(f'{description} does not exist')
    raise FileNotFoundError(f'{description} does not exist ({project_file_places(current_folder=current_folder)})')


def resolve_checkpoint(key: str, value: Union[str, os.PathLike]) -> Path:
    """The file named by the option ``path.<key>``, found by :func:`resolve_project_file` (the current folder, then
    the repository or the installed data). Raises ``FileNotFoundError`` naming the option and the places looked in."""
    return resolve_project_file(value, f'options: path.{key} = {value}')


def check_checkpoints_exist(path_opt: Optional[Mapping], networks: Optional[Sequence[str]] = None) -> None:
    """Fail before building any (possibly large) network when a named checkpoint is missing: every
    ``path.pretrain_network_<name>`` that is set (only those of ``networks``, e.g. ``['network_ae']``, when given)
    goes through :func:`resolve_checkpoint`."""
    for key, value in (path_opt or {}).items():
        if key.startswith('pretrain_network_') and value is not None and (
                networks is None or f'network_{key[len("pretrain_network_"):]}' in networks):
            resolve_checkpoint(key, value)


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                changed = True
    return key


def unwrap_state_dict(obj: object, param_key: Optional[str] = 'auto', source: str = '<state dict>') -> StateDict:
    """Find the tensor dict inside a checkpoint object and strip ``module.`` / ``_orig_mod.`` prefixes.

    Args:
        obj: what :func:`read_checkpoint_file` returned (or an in-memory dict).
        param_key: ``'auto'`` tries ``params_ema``, ``params``, ``state_dict``, ``ema_state``, ``model`` in that order;
            a name picks that entry (an error names the keys present when it is absent); ``None`` takes ``obj`` as is.
        source: a name for error messages (usually the file path).
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'{source}: expected a dict of tensors, got {type(obj).__name__}')
    if param_key == 'auto':
        for key in WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    elif param_key is not None:
        if param_key not in obj:
            raise CheckpointError(f'{source}: has no entry {param_key!r}; top-level keys: {sorted(map(str, obj))[:10]}')
        obj = obj[param_key]
        if not isinstance(obj, Mapping):
            raise CheckpointError(f'{source}: entry {param_key!r} is a {type(obj).__name__}, not a dict of tensors')
    state: StateDict = {}
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            raise CheckpointError(f'{source}: entry {key!r} is a {type(value).__name__}, not a tensor '
                                  f'(is this a training-state file rather than network weights?)')
        state[_strip_prefixes(str(key))] = value
    if not state:
        raise CheckpointError(f'{source}: contains no tensors')
    return state


def read_state_dict(path: Union[str, os.PathLike], param_key: Optional[str] = 'auto',
                    source: Optional[str] = None) -> StateDict:
    """Read the network weights of a checkpoint file (see :func:`unwrap_state_dict`; ``source`` names it in errors,
    default the path)."""
    return unwrap_state_dict(read_checkpoint_file(path), param_key=param_key, source=source or str(path))


def load_checkpoint_params(path: Union[str, os.PathLike], param_key: str) -> StateDict:
    """The weights under ``param_key`` when the checkpoint is a dict holding that entry (BasicSR's ``params`` /
    ``params_ema``), else the checkpoint's own layout (flat ``.safetensors`` and official files, ``state_dict``
    wrappers, ...): what the training models load as ``path.pretrain_network_*``. A BasicSR-style checkpoint (one
    holding ``params`` or ``params_ema``) without the named entry is refused, naming the entries it has (a misspelt
    ``param_key_*`` must not load other weights), except that ``params_ema`` falls back to ``params`` as in BasicSR
    (a run without EMA)."""
    checkpoint = read_checkpoint_file(path)
    if (param_key == 'params_ema' and isinstance(checkpoint, Mapping) and 'params_ema' not in checkpoint
            and isinstance(checkpoint.get('params'), Mapping)):
        logger.info(f'{path}: no params_ema entry; loading params')
        param_key = 'params'
    has_entry = isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(param_key), Mapping)
    if param_key != 'auto' and not has_entry and isinstance(checkpoint, Mapping) and any(
            isinstance(checkpoint.get(key), Mapping) for key in ('params', 'params_ema')):
        entries = sorted(str(key) for key, value in checkpoint.items() if isinstance(value, Mapping))
        raise CheckpointError(f'{path}: has no entry {param_key!r} (param_key); its weight entries are {entries}')
    return unwrap_state_dict(checkpoint, param_key=param_key if has_entry else 'auto', source=str(path))


def _is_derived_buffer(key: str) -> bool:
    return key.endswith(DERIVED_BUFFER_SUFFIXES)


def without_derived_buffers(state: Mapping[str, Tensor]) -> StateDict:
    """``state`` without the Swin buffers that the networks rebuild (:data:`DERIVED_BUFFER_SUFFIXES`): what a
    shipped file needs (a strict load accepts their absence)."""
    return {key: value for key, value in state.items() if not _is_derived_buffer(key)}


def check_compatibility(net: nn.Module, state: Mapping[str, Tensor], source: str = '<state dict>') -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and mis-shaped keys. The derived Swin buffers are
    exempt, except that a checkpoint holding shift masks must hold them for the same blocks as the network."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state and not _is_derived_buffer(k)]
    unexpected = [k for k in state if k not in expected and not _is_derived_buffer(k)]
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(v.shape)}' for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape) and not _is_derived_buffer(k)]
    # The masks' values are rebuilt, but which blocks have one is the build's shift layout (image_size, window): a
    # checkpoint that stores masks must store them for exactly the network's shifted blocks
    masks_in_state = {k for k in state if k.endswith('attn_mask')}
    masks_in_net = {k for k in expected if k.endswith('attn_mask')}
    layout = []
    if masks_in_state and masks_in_state != masks_in_net:
        layout = sorted(f'{k} ({"checkpoint only" if k in masks_in_state else "network only"})'
                        for k in masks_in_state ^ masks_in_net)
    if missing or unexpected or shapes or layout:
        lines = [f'{source} does not fit {type(net).__name__}:']
        if layout:
            lines.append('  the shifted Swin blocks differ (the network was built with another image_size or '
                         'window_size than the checkpoint)')
        for title, items in (('missing keys', missing), ('unexpected keys', unexpected), ('wrong shapes', shapes),
                             ('shift masks', layout)):
            if items:
                lines.append(f'  {title} ({len(items)}): {name_list(items, shown=20)}')
        raise CheckpointError('\n'.join(lines))


def load_weights(net: nn.Module, weights: Union[str, os.PathLike, Mapping[str, Tensor]], *,
                 param_key: Optional[str] = 'auto', strict: bool = True, source: Optional[str] = None) -> nn.Module:
    """Load ``weights`` (a path or a state dict) into ``net`` and return it.

    ``strict=True`` requires every parameter and buffer to be present with the right shape, except the Swin
    ``attn_mask`` / ``relative_position_index`` buffers (the network rebuilds them); ``strict=False`` loads the
    matching keys and logs the rest (the first few by name). ``source`` names the weights in errors and logs (default:
    the path, or ``<state dict>`` for a dict: pass the file a dict came from).
    """
    if isinstance(weights, Mapping):
        source = source or '<state dict>'
        state = unwrap_state_dict(weights, param_key=param_key, source=source)
    else:
        source = source or str(weights)
        state = read_state_dict(weights, param_key=param_key, source=source)
    if strict:
        check_compatibility(net, state, source)
    expected = net.state_dict()
    usable = {k: v for k, v in state.items() if k in expected and tuple(v.shape) == tuple(expected[k].shape)}
    result = net.load_state_dict(usable, strict=False)
    unused = [k for k in state if k not in usable]
    if not strict and (result.missing_keys or unused):
        logger.warning('%s: loaded %d tensors into %s; %d keys not in the checkpoint (%s), %d checkpoint keys unused '
                       '(%s)', source, len(usable), type(net).__name__, len(result.missing_keys),
                       name_list(result.missing_keys), len(unused), name_list(unused))
    return net


def load_pretrained(net: nn.Module, path: Union[str, os.PathLike], *, param_key: str,
                    strict: bool = True) -> nn.Module:
    """Load a training recipe's ``path.pretrain_network_*`` file into ``net`` (the entry ``param_key`` when the file
    has it, else its own layout: see :func:`load_checkpoint_params`); errors name the file."""
    return load_weights(net, load_checkpoint_params(path, param_key), param_key=None, strict=strict, source=str(path))


def load_network_from_options(net: nn.Module, path_opt: Optional[Mapping], name: str, *,
                              default_param_key: str = 'auto', param_key: Optional[str] = None,
                              log: Optional[logging.Logger] = None) -> Optional[Path]:
    """Load ``path.pretrain_network_<name>`` of an options file into ``net``: the one way every options-driven load
    (training models, inference pipeline, benchmarks) reads a checkpoint.

    The file is found by :func:`resolve_checkpoint` (current folder, then the repository) and read by
    :func:`load_pretrained` with ``param_key`` (default: ``path.param_key_<name>``, else ``default_param_key``) and
    ``strict`` = ``path.strict_load_<name>`` (default true). ``log`` (default: this module's logger) gets one line
    naming the file and the entry (a training model passes BasicSR's, so the line is in the run's log). Returns the
    file loaded, or ``None`` when the option is absent or empty (``net`` is left as it is).
    """
    path_opt = path_opt or {}
    value = path_opt.get(f'pretrain_network_{name}')
    if not value:
        return None
    checkpoint = resolve_checkpoint(f'pretrain_network_{name}', value)
    param_key = param_key or path_opt.get(f'param_key_{name}', default_param_key)
    load_pretrained(net, checkpoint, param_key=param_key, strict=path_opt.get(f'strict_load_{name}', True))
    (log or logger).info(f'Loaded network_{name} ({type(net).__name__}) from {checkpoint} [{param_key}]')
    return checkpoint


def save_state_dict(path: Union[str, os.PathLike], state: Mapping[str, Tensor] | Mapping[str, Mapping[str, Tensor]],
                    metadata: Optional[Dict[str, str]] = None) -> Path:
    """Write weights atomically (temp file + rename: an interrupted save never leaves a half-written file).

    ``.safetensors``: ``state`` must be a flat tensor dict. Anything else: ``torch.save`` (nested dicts allowed, e.g.
    BasicSR's ``{'params': ..., 'params_ema': ...}``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=str(path.parent))
    os.close(fd)
    try:
        if path.suffix.lower() == '.safetensors':
            from safetensors.torch import save_file
            flat = {k: v.detach().contiguous().cpu() for k, v in state.items()}
            save_file(flat, tmp, metadata=metadata)
        else:
            torch.save(dict(state), tmp)
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def prefixed(state: Mapping[str, Tensor], prefix: str) -> StateDict:
    """The entries of ``state`` under ``prefix`` (e.g. ``'unet.'``), with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
