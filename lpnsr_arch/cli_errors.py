"""How the command-line tools end a user mistake: one line on stderr that names what is wrong, and exit status 2.

This is the convention of ``lpnsr`` (:mod:`lpnsr_arch.inference`), shared by the benchmarks (``lpnsr_arch.bench.*``)
and the dataset scripts (``datasets/*.py``):

* library functions raise specific exceptions whose message names the file, folder, option or key at fault
  (``ValueError`` - :class:`~lpnsr_arch.imageio.ImageReadError` included -, ``FileNotFoundError``,
  ``FileExistsError``, ``NotADirectoryError``, ``KeyError``);
* a CLI's ``main`` runs its set-up inside :func:`user_errors`, which turns exactly those types into
  ``ERROR <message>`` on the log (stderr) and ``SystemExit(2)``; any other exception (a programming error) keeps its
  traceback;
* a bad option value (:func:`int_at_least` and friends, ``choices``) is reported by :class:`ArgumentParser` on one
  line too, with the same status 2 argparse always uses.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Callable, Iterator, NoReturn, Tuple, Type, Union

from lpnsr_arch.weights import CheckpointError

__all__ = [
    'EXIT_USAGE', 'USER_ERRORS', 'BUILD_ERRORS', 'ArgumentParser', 'int_at_least', 'positive_int', 'non_negative_int',
    'error_line', 'user_errors', 'require_folder', 'check_output_folder', 'prepare_output_folder'
]

EXIT_USAGE = 2
"""The exit status of a user mistake (bad option, missing file, malformed options...): argparse's, and ``lpnsr``'s."""

USER_ERRORS: Tuple[Type[BaseException], ...] = (OSError, ValueError, KeyError)
"""What a library function raises for a mistake in its input (each message names the path, option or key)."""

BUILD_ERRORS: Tuple[Type[BaseException], ...] = USER_ERRORS + (TypeError, CheckpointError)
"""What building networks from a faulty options file raises: :data:`USER_ERRORS` (a missing file or key, malformed
YAML), an argument the network does not take (``TypeError``), a checkpoint that does not fit
(:class:`~lpnsr_arch.weights.CheckpointError`)."""


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors are one line (``PROG: error: MESSAGE (see --help)``) and exit 2,
    without the usage block argparse prints first."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f'{self.prog}: error: {message} (see --help)\n')


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number >= ``minimum`` (e.g. ``--limit 0`` is refused, not read as "all")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected a whole number, got {text!r}') from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f'must be at least {minimum}, got {value}')
        return value

    parse.__name__ = f'int_at_least_{minimum}'
    return parse


positive_int = int_at_least(1)
"""argparse ``type``: a whole number >= 1."""
non_negative_int = int_at_least(0)
"""argparse ``type``: a whole number >= 0."""


def error_line(error: BaseException) -> str:
    """The message of ``error`` on one line: a ``KeyError``'s text without the quotes ``str()`` adds, and a
    multi-line message (e.g. a YAML parser's) joined with spaces."""
    if isinstance(error, KeyError) and len(error.args) == 1:
        text = str(error.args[0])
    else:
        text = str(error) or type(error).__name__
    return ' '.join(part.strip() for part in text.splitlines() if part.strip())


@contextlib.contextmanager
def user_errors(log: logging.Logger, context: str = '',
                types: Tuple[Type[BaseException], ...] = USER_ERRORS) -> Iterator[None]:
    """Turn an exception of ``types`` raised in the block into one ``ERROR <context><message>`` log line and
    ``SystemExit(2)``; everything else propagates unchanged. Use it at a CLI boundary only, around set-up steps whose
    errors are the user's (arguments, files, options)."""
    try:
        yield
    except types as error:
        log.error(f'{context}{error_line(error)}')
        raise SystemExit(EXIT_USAGE) from None


PathLike = Union[str, Path]


def require_folder(path: PathLike, option: str) -> Path:
    """``path`` as a ``Path`` if it is an existing folder; else ``FileNotFoundError`` / ``NotADirectoryError`` naming
    ``option`` and the path."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"{option} '{folder}' does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{option} '{folder}' is a file, not a folder")
    return folder


def check_output_folder(path: PathLike, option: str) -> Path:
    """Refuse, without creating anything, an output folder ``path`` that cannot be one: an existing file, or a file
    on the way (``NotADirectoryError`` naming ``option``). :func:`prepare_output_folder` then creates it."""
    folder = Path(path)
    for candidate in (folder, *folder.parents):
        if candidate.exists() and not candidate.is_dir():
            what = 'is an existing file' if candidate == folder else f'lies under the existing file {candidate}'
            raise NotADirectoryError(f"{option} '{folder}' {what}, not a folder")
    return folder


def prepare_output_folder(path: PathLike, option: str) -> Path:
    """Create the output folder ``path`` (and its parents) now, so that a path that cannot be a folder (an existing
    file, or a file on the way) or a folder that refuses files is refused before any work; ``NotADirectoryError`` /
    ``OSError`` name ``option``."""
    folder = check_output_folder(path, option)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"{option} '{folder}': cannot create the folder ({error.strerror or error})") from error
    try:  # an existing folder may still refuse files (permissions, a read-only or immutable folder)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OSError(f"{option} '{folder}': cannot write into the folder ({error.strerror or error})") from error
    return folder
