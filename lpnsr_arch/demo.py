"""``make demo``: super-resolve photographs that ship with scikit-image using the shipped demonstration model.

1. writes the HR photos (``skimage.data``: astronaut, coffee, chelsea, rocket) to ``<out>/hr``;
2. degrades them with the training degradation (Real-ESRGAN second order, fixed seed) into ``<out>/pairs/{gt,lq}``;
3. super-resolves the LR images with LPNSR (``<out>/sr``);
4. writes a metrics table (PSNR/SSIM on Y with crop 4, NIQE; bicubic, the RRDBNet pre-upsampler, and LPNSR: the
   saved outputs of step 3, scored as written) to ``<out>/quality.{csv,json}`` and comparison sheets (LR, bicubic,
   RRDBNet, LPNSR with the seed and the next one, GT) to ``<out>/sheets``.

The outputs of an earlier demo run in ``<out>`` are replaced; another non-empty ``<out>`` is refused.

Everything runs offline on the CPU (or a GPU when present).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import List, Optional, Sequence


from lpnsr_arch.bench import compare_sheet, quality
from lpnsr_arch.cli_errors import user_errors
from lpnsr_arch.data.sample_photos import (BUNDLED_IMAGES, DEFAULT_IMAGES, check_image_names, load_bundled_rgb,
                                           write_rgb_png)
from lpnsr_arch.data.test_pairs import make_test_pairs
from lpnsr_arch.inference import main as inference_main
from lpnsr_arch.weights import find_project_file, project_file_places, resolve_project_file

logger = logging.getLogger(__name__)

LPNSR_OPTIONS = 'options/demo/inference_lpnsr_demo.yml'
RRDBNET_OPTIONS = 'options/demo/test_rrdbnet_upsampler_demo.yml'
DEGRADATION_RECIPE = 'options/demo_model/01_upsampler_rrdbnet.yml'
WEIGHTS = ('weights/demo/upsampler_rrdbnet.safetensors', 'weights/demo/denoiser_resshift.safetensors',
           'weights/demo/noise_predictor_lpnsr.safetensors')


def write_sample_photos(out: Path, names: Sequence[str]) -> List[Path]:
    """Save the bundled scikit-image photos ``names`` (:mod:`lpnsr_arch.data.sample_photos`) as RGB PNG files in
    ``out``."""
    check_image_names(names)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = out / f'{name}.png'
        write_rgb_png(path, load_bundled_rgb(name))
        paths.append(path)
    return paths


def check_weights() -> None:
    """The shipped demonstration weights are there, found as the demo's options find them (the current folder, then
    the repository's ``weights/demo`` or a plain install's data); a ``FileNotFoundError`` lists the missing ones."""
    missing = [weight for weight in WEIGHTS if find_project_file(weight) is None]
    if missing:
        raise FileNotFoundError(f'the demonstration weights are missing: {", ".join(missing)} '
                                f'({project_file_places()}); train them in a clone of the repository with '
                                f'`bash scripts/train_demo_model.sh` (needs ../shared/data)')


def project_file(relative: str) -> str:
    """The absolute path of one of the project's own options files: from the repository or a plain install's data,
    wherever the demo runs from (an ``options/...`` file in the current folder is not used; the checkpoints those
    files name are looked up as everywhere: the current folder first)."""
    return str(resolve_project_file(relative, relative, current_folder=False).resolve())


DEMO_OUTPUTS = ('hr', 'pairs', 'sr', 'sheets', 'quality.csv', 'quality.json', 'quality_per_image.csv',
                'quality_per_image.json')
DEMO_MARKER = '.lpnsr_demo'


def _is_demo_folder(out: Path) -> bool:
    """``out`` was written by this demo: it holds the marker file, or (a demo folder from before the marker) a
    ``quality.json`` whose dataset is the demo's own ``skimage_demo`` pairs in ``out``."""
    if (out / DEMO_MARKER).is_file():
        return True
    try:
        meta = json.loads((out / 'quality.json').read_text(encoding='utf-8')).get('meta') or {}
    except (OSError, ValueError, AttributeError):
        return False
    expected = f"skimage_demo={out / 'pairs' / 'gt'},{out / 'pairs' / 'lq'}"
    return meta.get('dataset') == [expected]


def clear_previous_run(out: Path) -> None:
    """Remove the outputs of an earlier demo run in ``out`` (its images would otherwise join this run's table).
    ``out`` must be new, empty, or a folder this demo wrote (:func:`_is_demo_folder`); another non-empty folder is
    refused with a ``FileExistsError`` and left untouched. Only the demo's own outputs are removed."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f'--out {out} is a file, not a folder')
    if out.is_dir() and any(out.iterdir()):
        if not _is_demo_folder(out):
            raise FileExistsError(f'--out {out} is not empty and holds no earlier demo results; choose a new folder')
        for name in DEMO_OUTPUTS:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.is_file():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text('made by `python -m lpnsr_arch.demo`: its outputs are replaced on the next run\n')


def prepare_demo(*, out: Path, images: Sequence[str]) -> None:
    """The user's part of a demo run, checked before anything in ``out`` is replaced: the weights exist, the photo
    names are known, ``out`` is new or a demo folder (then cleared: :func:`clear_previous_run`)."""
    check_weights()
    check_image_names(images)
    clear_previous_run(out)


def run_demo(*, out: Path, images: Sequence[str], seed: int, device: str) -> None:
    """The demo (module docstring) into ``out``, prepared by :func:`prepare_demo`."""
    start = time.perf_counter()
    write_sample_photos(out / 'hr', images)
    make_test_pairs(hr=str(out / 'hr'), out=str(out / 'pairs'), degradation_name='realesrgan', scale=4, seed=seed,
                    recipe_path=project_file(DEGRADATION_RECIPE))
    lq_dir, gt_dir = out / 'pairs' / 'lq', out / 'pairs' / 'gt'
    lpnsr_options, rrdbnet_options = project_file(LPNSR_OPTIONS), project_file(RRDBNET_OPTIONS)
    code = inference_main(['-i', str(lq_dir), '-o', str(out / 'sr'), '--opt', lpnsr_options,
                           '--seed', str(seed), '--device', device, '--suffix', 'lpnsr', '--precision', 'fp32'])
    if code != 0:  # the saved outputs and the sheets both run in fp32, so that they agree
        raise RuntimeError(f'the LPNSR inference step failed (exit status {code}); see the errors above')
    quality.main(['--method', 'bicubic', '--method', f'rrdbnet=basicsr:{rrdbnet_options}', '--method',
                  f'lpnsr=folder:{out / "sr"}', '--dataset', f'skimage_demo={gt_dir},{lq_dir}',
                  '--seed', str(seed), '--device', device, '--out', str(out)])
    sheet_args = ['--method', f'rrdbnet=basicsr:{rrdbnet_options}', '--method', f'lpnsr s{seed}=folder:{out / "sr"}',
                  '--method', f'lpnsr=lpnsr:{lpnsr_options}', '--seeds', str(seed + 1), '--device', device,
                  '--out', str(out / 'sheets')]  # LPNSR with the seed (the saved, scored output) and the next one
    for name in images:
        sheet_args += ['--lq', str(lq_dir / f'{name}.png'), '--gt', str(gt_dir / f'{name}.png')]
    compare_sheet.main(sheet_args)
    logger.info('demo finished in %.1f s: outputs in %s', time.perf_counter() - start, out)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', type=Path, default=Path('results/demo'),
                        help='output folder (default results/demo; created, files in it replaced)')
    parser.add_argument('--images', nargs='+', default=list(DEFAULT_IMAGES),
                        help=f"bundled scikit-image photos; any of: {', '.join(sorted(BUNDLED_IMAGES))}")
    parser.add_argument('--seed', type=int, default=0, help='degradation seed (image i: seed + i) and LPNSR seed')
    parser.add_argument('--device', default='auto', help="'auto', 'cpu' or 'cuda'")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    with user_errors(logger, '', (FileNotFoundError, FileExistsError, NotADirectoryError, ValueError, KeyError)):
        prepare_demo(out=args.out, images=args.images)  # a mistake in --out or --images: one ERROR line, exit 2
    run_demo(out=args.out, images=args.images, seed=args.seed, device=args.device)


if __name__ == '__main__':
    main()
