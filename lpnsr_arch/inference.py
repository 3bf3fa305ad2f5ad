"""The ``lpnsr`` command: super-resolve an image or a folder of images with an LPNSR pipeline.

Usage (Real-ESRGAN's conventions)::

    python -m lpnsr_arch.inference -i inputs -o results --opt options/inference_lpnsr_official.yml \
        --tile 256 --seed 12345 --precision bf16

Every input gives ``<output>/<name>_<suffix>.<ext>``. Unreadable files are reported and skipped; the exit code is
non-zero only when no image could be processed (or the arguments are wrong). An input is never overwritten; an
earlier file of an output's name is, and a ``WARNING`` at the end names such files.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from lpnsr_arch.cli_errors import (BUILD_ERRORS, ArgumentParser, non_negative_int, positive_int, prepare_output_folder,
                                   user_errors)
from lpnsr_arch.imageio import IMAGE_EXTENSIONS, ImageReadError, read_image, restore_mode, write_image
from lpnsr_arch.messages import name_list
from lpnsr_arch.pipeline import COLOR_FIXES, COMPILE_SCOPES, NOISE_KINDS, PRECISIONS, LPNSRPipeline, load_options

__all__ = ['main', 'cli', 'build_parser', 'collect_inputs', 'output_path_for']

logger = logging.getLogger('lpnsr_arch.inference')

DEFAULT_OPTIONS = Path('options') / 'inference_lpnsr_official.yml'
"""Relative, so that it is looked up like any ``--opt``: the current folder, the repository, the installed data."""
OOM_HINT = 'If you run out of memory, try a smaller --tile (e.g. 128) or --tile-batch 1.'


def build_parser() -> ArgumentParser:
    """The command-line interface (every option defaults to the options file's ``inference:`` block)."""
    parser = ArgumentParser(prog='lpnsr', description='LPNSR 4x super-resolution of an image or folder.')
    parser.add_argument('-i', '--input', type=Path, default=Path('inputs'),
                        help='input image, or a folder (its image files; subfolders are not searched); '
                        'default: inputs')
    parser.add_argument('-o', '--output', type=Path, default=Path('results'),
                        help='output folder, created if needed (always a folder); default: results')
    parser.add_argument('--opt', type=Path, default=DEFAULT_OPTIONS,
                        help='options YAML naming networks/weights; default: options/inference_lpnsr_official.yml '
                        '(needs the official checkpoints; options/demo/inference_lpnsr_demo.yml runs the shipped '
                        'demonstration model)')
    parser.add_argument('--tile', type=non_negative_int, default=None,
                        help='LR tile size (0: off; default from the options)')
    parser.add_argument('--tile-overlap', type=non_negative_int, default=None,
                        help='LR pixels shared by neighbouring tiles')
    parser.add_argument('--tile-batch', type=positive_int, default=None, help='tiles per network call')
    parser.add_argument('--seed', type=int, default=None, help='noise seed (default from the options)')
    parser.add_argument('--noise', choices=NOISE_KINDS, default=None, help='learned (LPNSR) or gaussian (ResShift)')
    parser.add_argument('--upsampler', choices=('network', 'bicubic'), default='network',
                        help='pre-upsampler: the options file\'s network or plain bicubic')
    parser.add_argument('--color-fix', choices=COLOR_FIXES, default=None, help='colour correction')
    parser.add_argument('--precision', choices=sorted(PRECISIONS), default=None,
                        help='autocast precision of the diffusion part (default: bf16 on CUDA, fp32 on CPU)')
    parser.add_argument('--upsampler-precision', choices=sorted(PRECISIONS), default='fp32',
                        help='precision of the pre-upsampler (default fp32, as the official code)')
    parser.add_argument('--upsampler-self-ensemble', action=argparse.BooleanOptionalAction, default=None,
                        help='average the pre-upsampler over the 8 flips and quarter turns of the LR (8x its cost; '
                             'default from the options\' inference.upsampler_self_ensemble)')
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda, cuda:1, ...')
    parser.add_argument('--channels-last', action='store_true', help='NHWC memory format (faster convolutions on GPUs)')
    parser.add_argument('--compile', choices=('none', 'default', 'reduce-overhead'), default='none',
                        help='torch.compile the networks of --compile-scope (reduce-overhead: CUDA graphs); '
                        'pays off over many images of one size')
    parser.add_argument('--cuda-graphs', action=argparse.BooleanOptionalAction, default=None,
                        help='replay the networks from CUDA graphs captured per input size (no compiler; two warm-ups '
                        'and a capture per size; default: on with a CUDA device unless --compile is given)')
    parser.add_argument('--compile-scope', choices=COMPILE_SCOPES, default=None,
                        help='what --compile and --cuda-graphs cover: the denoiser and noise predictor (diffusion) or '
                        'every network (all); default: all with CUDA graphs, diffusion with --compile')
    parser.add_argument('--ext', choices=('auto', 'png', 'jpg'), default='auto',
                        help='output format (auto: as the input; a jpg output of an alpha or 16-bit image becomes png)')
    parser.add_argument('--suffix', default='out',
                        help='output name suffix (<name>_<suffix>.<ext>; default: out); "" for none')
    parser.add_argument('--quiet', action='store_true', help='no progress bar, warnings only')
    return parser


def collect_inputs(source: Path) -> List[Path]:
    """The image files named by ``source``: the file itself, or the folder's image files (sorted, not recursive)."""
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    raise FileNotFoundError(f'input {source} is neither a file nor a folder')


def output_path_for(input_path: Path, output_dir: Path, *, suffix: str, ext: str, mode: str, bit_depth: int) -> Path:
    """``<output_dir>/<stem>[_<suffix>].<ext>``; a jpg/jpeg name of an alpha or 16-bit image becomes png (JPEG holds
    neither); other formats are kept as they are."""
    if ext == 'auto':
        extension = input_path.suffix.lower().lstrip('.') or 'png'
    else:
        extension = ext
    if extension in ('jpg', 'jpeg') and (mode in ('LA', 'RGBA') or bit_depth == 16):
        extension = 'png'
    name = f'{input_path.stem}_{suffix}' if suffix else input_path.stem
    return output_dir / f'{name}.{extension}'


def resolve_device(name: str) -> torch.device:
    """``'auto'`` -> CUDA when available, else CPU. A device this machine or this PyTorch build cannot run on (a
    missing CUDA index, ``mps`` or ``xpu`` without support, ``meta``, an unknown name) is a ``RuntimeError`` naming
    it."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device = torch.device(name)
    if device.type == 'cuda' and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise RuntimeError(f'{name} is not available here ({torch.cuda.device_count()} CUDA devices visible)')
    if device.type == 'meta':
        raise RuntimeError(f'{name} holds no data: images cannot be processed on it')
    try:
        torch.zeros(1, device=device)
    except (RuntimeError, AssertionError, ImportError) as error:  # e.g. "PyTorch is not linked with support for mps"
        reason = str(error).strip() or type(error).__name__
        raise RuntimeError(f'{name} is not usable with this PyTorch build ({reason})') from None
    return device


def build_pipeline(options_path: Path, upsampler: str, device: torch.device) -> LPNSRPipeline:
    """The pipeline of ``options_path``; ``upsampler='bicubic'`` replaces its pre-upsampler by bicubic."""
    options = load_options(options_path)
    if upsampler == 'bicubic':
        scale = int((options.get('inference') or {}).get('scale', 4))
        options['network_upsampler'] = {'type': 'LPNSRBicubicUpsampler', 'scale': scale}
        options['path'] = dict(options.get('path') or {}, pretrain_network_upsampler=None)
    return LPNSRPipeline.from_options(options, device)


@dataclass
class RunSummary:
    """What a run did (``replaced``: the written files that were already there before the run)."""
    written: List[Path]
    failed: List[Path]
    replaced: List[Path] = field(default_factory=list)


def process_files(pipeline: LPNSRPipeline, inputs: Sequence[Path], args: argparse.Namespace,
                  device: torch.device) -> RunSummary:
    """Super-resolve every file of ``inputs`` (``args.tile`` / ``args.tile_overlap`` as settled by
    :meth:`LPNSRPipeline.resolve_tiling`); failures are logged and counted, not raised."""
    from tqdm import tqdm

    precision = args.precision or ('bf16' if device.type == 'cuda' else 'fp32')
    if precision == 'fp16' and device.type == 'cpu':
        logger.warning('--precision fp16 on a CPU is very slow (about 20x fp32 here); use fp32 (bf16 is fast only on '
                       'CPUs with native bf16: emulated, it ran 50 to 100x slower than fp32 on an AVX2 CPU)')
    seed = pipeline.defaults.seed if args.seed is None else args.seed
    protected = {p.resolve() for p in inputs}
    written: Dict[Path, Path] = {}  # output -> the input it was made from, in this run
    summary = RunSummary(written=[], failed=[])
    for path in tqdm(inputs, desc='lpnsr', unit='img', disable=args.quiet or len(inputs) < 2):
        try:
            lr01, record = read_image(path)
            out_path = output_path_for(path, args.output, suffix=args.suffix, ext=args.ext, mode=record.mode,
                                       bit_depth=record.bit_depth)
            if out_path.resolve() in protected:
                raise ValueError(f'{path}: the output {out_path} would overwrite an input; change -o or --suffix')
            if out_path.resolve() in written:
                hint = 'rename one of them' + ('' if args.ext == 'auto' else ' or use --ext auto')
                raise ValueError(f'{path}: the output {out_path} was already written from '
                                 f'{written[out_path.resolve()]} in this run (same name stem); {hint}')
            sr01 = pipeline(lr01.to(device), seed=seed, noise=args.noise, color_fix=args.color_fix, tile=args.tile,
                            tile_overlap=args.tile_overlap, tile_batch=args.tile_batch, precision=precision,
                            upsampler_precision=args.upsampler_precision,
                            upsampler_self_ensemble=args.upsampler_self_ensemble)
            existed = out_path.exists()
            write_image(out_path, restore_mode(sr01, record, pipeline.scale).cpu(), bit_depth=record.bit_depth)
        except (ImageReadError, ValueError, OSError) as error:
            message = str(error)  # most already start with the path
            logger.error(f'skipped {message if message.startswith(str(path)) else f"{path}: {message}"}')
            summary.failed.append(path)
            continue
        except RuntimeError as error:
            hint = f' {OOM_HINT}' if 'out of memory' in str(error).lower() else ''
            logger.error(f'skipped {path}: {error}{hint}')
            summary.failed.append(path)
            continue
        logger.info(f'{path} -> {out_path}')
        written[out_path.resolve()] = path
        summary.written.append(out_path)
        if existed:
            summary.replaced.append(out_path)
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit code (0: at least one image written, 1: all failed, 2: bad arguments: one
    ERROR line naming the file, option or key, :mod:`lpnsr_arch.cli_errors`)."""
    try:
        return _run(argv)
    except SystemExit as stop:  # argparse and user_errors end with SystemExit(2); --help with 0
        return stop.code if isinstance(stop.code, int) else 2


def _run(argv: Optional[Sequence[str]]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format='%(levelname)s %(message)s')
    import cv2
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # a bad image is reported by its ERROR line
    with user_errors(logger):
        inputs = collect_inputs(args.input)
        if not inputs:
            raise FileNotFoundError(f'no image files ({", ".join(IMAGE_EXTENSIONS)}) in {args.input}')
    with user_errors(logger, f'--device {args.device}: ', (RuntimeError, ValueError)):
        device = resolve_device(args.device)
    with user_errors(logger, '--cuda-graphs: '):
        if args.cuda_graphs and device.type != 'cuda':
            raise ValueError(f'needs a CUDA device; --device {args.device} gives {device}')
        if args.cuda_graphs and args.compile != 'none':
            raise ValueError(f'not with --compile {args.compile}: choose one')
    cuda_graphs = args.cuda_graphs if args.cuda_graphs is not None else device.type == 'cuda' and args.compile == 'none'
    with user_errors(logger, '--compile-scope: '):
        if args.compile_scope is not None and args.compile == 'none' and not cuda_graphs:
            raise ValueError('has no effect: neither --compile nor CUDA graphs are on')
    with user_errors(logger, f'cannot build the pipeline from {args.opt}: ', BUILD_ERRORS):
        pipeline = build_pipeline(args.opt, args.upsampler, device).accelerate(
            channels_last=args.channels_last, compile_mode=None if args.compile == 'none' else args.compile,
            cuda_graphs=cuda_graphs, compile_scope=args.compile_scope or ('all' if cuda_graphs else 'diffusion'))
    given = ' '.join(f'{flag} {value}' for flag, value in (('--tile', args.tile), ('--tile-overlap', args.tile_overlap))
                     if value is not None) or f'the tiling of {args.opt}'
    with user_errors(logger, f'{given}: '):
        args.tile, args.tile_overlap = pipeline.resolve_tiling(args.tile, args.tile_overlap)  # checked once
    with user_errors(logger):  # created only once everything else is settled
        prepare_output_folder(args.output, '-o/--output')
    summary = process_files(pipeline, inputs, args, device)
    logger.info(f'{len(summary.written)} written, {len(summary.failed)} failed, output folder {args.output}')
    if summary.replaced:  # said once, after the run: re-running into one folder is common, but should not be silent
        logger.warning(f'{len(summary.replaced)} of the written files replaced files of the same name that were '
                       f'already in {args.output}: {name_list([p.name for p in summary.replaced])}')
    return 0 if summary.written else 1


def cli() -> None:
    """The ``lpnsr`` console-script entry point."""
    sys.exit(main())


if __name__ == '__main__':
    cli()
