"""Pack an image folder into an LMDB with BasicSR's ``lmdb_util`` (keys: relative paths without extension).

An existing ``--output`` is never touched: the script refuses it. The database is built in a temporary folder beside
``--output`` and moved there only when complete, so a failed run leaves nothing behind. A user mistake (missing or
empty ``--input``, a file that is not an image, an existing ``--output``) ends the script with one ``ERROR`` line
naming the path, and exit status 2.

Example::

    python datasets/make_lmdb.py --input datasets/demo/train_hr --output datasets/demo/train_hr.lmdb
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from typing import List, Optional, Tuple

import cv2

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir)))
import lpnsr_arch  # noqa: E402,F401  (torchvision shim before BasicSR)
from basicsr.utils.lmdb_util import make_lmdb_from_imgs  # noqa: E402

from lpnsr_arch.cli_errors import ArgumentParser, prepare_output_folder, require_folder, user_errors  # noqa: E402
from lpnsr_arch.data.sources import scan_image_folder  # noqa: E402
from lpnsr_arch.messages import name_list  # noqa: E402

LOGGER = logging.getLogger('make_lmdb')
_MIN_MAP_SIZE = 64 * 1024 ** 2


def list_images_and_keys(folder: str) -> Tuple[List[str], List[str]]:
    """Relative image paths under ``folder`` and their LMDB keys (path without extension); checks key clashes."""
    require_folder(folder, '--input')
    paths = scan_image_folder(folder)
    if not paths:
        raise ValueError(f"--input '{folder}' holds no image")
    keys = [os.path.splitext(path)[0] for path in paths]
    clashes = sorted({key for key in keys if keys.count(key) > 1})
    if clashes:
        raise ValueError(f"--input '{folder}': several files share the key(s) {clashes} (same name, other extension)")
    return paths, keys


def estimate_map_size(folder: str, paths: List[str]) -> int:
    """Generous LMDB size: encoded files re-encoded as PNG level 1 stay well under 20x a JPEG's size."""
    total = sum(os.path.getsize(os.path.join(folder, path)) for path in paths)
    return max(_MIN_MAP_SIZE, 20 * total)


def check_output(output: str) -> None:
    """``ValueError`` unless ``output`` ends with ``.lmdb``; ``FileExistsError`` if it exists (it is left as it is);
    its parent folder is created (``NotADirectoryError`` if a file is in the way)."""
    if not output.endswith('.lmdb'):
        raise ValueError(f"--output must end with '.lmdb', got '{output}'")
    if os.path.lexists(output):
        raise FileExistsError(f"--output '{output}' already exists; nothing was written (remove it or choose "
                              'another name)')
    prepare_output_folder(os.path.dirname(os.path.abspath(output)), "--output's parent folder")


def check_readable(folder: str, paths: List[str]) -> None:
    """``ValueError`` naming the files under ``folder`` that OpenCV cannot read as images (checked from their
    headers: a damaged file with a valid header still fails later, in BasicSR's reader)."""
    unreadable = [path for path in paths if not cv2.haveImageReader(os.path.join(folder, path))]
    if unreadable:
        files = name_list([os.path.join(folder, path) for path in unreadable])
        raise ValueError(f"--input '{folder}': {len(unreadable)} file(s) are not readable images: {files}")


def prepare_lmdb(input_folder: str, output: str) -> Tuple[List[str], List[str]]:
    """Every check before writing (:func:`check_output`, :func:`list_images_and_keys`, :func:`check_readable`);
    returns the image paths and their keys."""
    check_output(output)
    paths, keys = list_images_and_keys(input_folder)
    check_readable(input_folder, paths)
    return paths, keys


def write_lmdb(input_folder: str, paths: List[str], keys: List[str], output: str, compress_level: int) -> None:
    """Build the LMDB in a temporary folder beside ``output`` and move it to ``output`` when complete; the temporary
    folder is removed whatever happens, and an ``output`` that appeared meanwhile is not replaced."""
    staging = tempfile.mkdtemp(prefix=f'.{os.path.basename(output)}.', suffix='.partial',
                               dir=os.path.dirname(os.path.abspath(output)))
    try:
        partial = os.path.join(staging, os.path.basename(output))
        make_lmdb_from_imgs(input_folder, partial, paths, keys, compress_level=compress_level,
                            map_size=estimate_map_size(input_folder, paths))
        if os.path.lexists(output):
            raise FileExistsError(f"--output '{output}' appeared while the LMDB was written; it was left as it is")
        os.rename(partial, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def make_lmdb(*, input_folder: str, output: str, compress_level: int) -> int:
    """Write ``output`` (``*.lmdb``); returns the number of images. Raises as :func:`prepare_lmdb`."""
    paths, keys = prepare_lmdb(input_folder, output)
    write_lmdb(input_folder, paths, keys, output, compress_level)
    return len(paths)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The command line (a bad value is one ``error:`` line and exit status 2)."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--input', required=True, help='image folder (scanned recursively)')
    parser.add_argument('--output', required=True, help="LMDB folder to create; must end with '.lmdb'")
    parser.add_argument('--compress-level', type=int, default=1, choices=range(10), metavar='0..9',
                        help='PNG compression level of the stored images')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the script; returns the number of images. A user mistake is one ERROR line and ``SystemExit(2)``."""
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    args = parse_args(argv)
    with user_errors(LOGGER):
        paths, keys = prepare_lmdb(args.input, args.output)
    with user_errors(LOGGER, types=(OSError, )):
        write_lmdb(args.input, paths, keys, args.output, args.compress_level)
    LOGGER.info('packed %d images into %s', len(paths), args.output)
    return len(paths)


if __name__ == '__main__':
    main()
