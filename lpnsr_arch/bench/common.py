"""Shared pieces of the benchmarks: methods (what upscales), datasets (GT/LQ folder pairs), metrics, reporting.

A method is given on the command line as ``[NAME=]KIND[:OPTIONS]``:

* ``bicubic``: bicubic x scale (``align_corners=False``), clamped to [0, 1];
* ``basicsr:OPTIONS.yml``: a BasicSR-trained network (RRDBNet, SwinIR, ...): the options' ``network_g`` block and
  ``path.pretrain_network_g`` (``params_ema`` first, then ``params``), input/output in [0, 1];
* ``lpnsr:OPTIONS.yml`` or ``lpnsr:@PRESET`` (official/small/tiny): an :class:`~lpnsr_arch.pipeline.LPNSRPipeline`;
  the seed, noise kind and tiling come from the benchmark's arguments;
* ``folder:DIR`` (``bench.quality``, ``bench.compare_sheet``): outputs saved earlier, by ``lpnsr_arch/inference.py``
  or another tool, read instead of computed (:func:`match_saved_outputs`); ``{dataset}`` in ``DIR`` stands for each
  dataset's name.

A user mistake (a missing or empty folder, an unreadable image, GT/LQ files that do not pair up, a missing or
malformed options file, a bad ``--device`` or ``--out``) is found while the CLI sets up, before any method runs, and
ends it with one log line naming the argument and the file and ``SystemExit(2)`` (:mod:`lpnsr_arch.cli_errors`).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from lpnsr_arch.archs.upsampler_arch import bicubic_upscale
from lpnsr_arch.cli_errors import (BUILD_ERRORS, check_output_folder, non_negative_int, positive_int,
                                   prepare_output_folder, user_errors)
from lpnsr_arch.imageio import IMAGE_EXTENSIONS, read_image
from lpnsr_arch.inference import resolve_device
from lpnsr_arch.messages import name_list
from lpnsr_arch.pipeline import PIPELINE_NETWORKS, PRECISIONS, LPNSRPipeline, load_options

__all__ = [
    'Method', 'ImagePair', 'parse_method', 'build_method', 'load_pairs', 'parse_dataset', 'to_bgr255',
    'psnr_ssim_y', 'niqe_y', 'check_gt_size', 'read_gt', 'NIQE_MIN_SIZE', 'report', 'lpips_note', 'resolve_device',
    'add_run_arguments', 'parse_run_arguments', 'run_output_folder', 'positive_int', 'non_negative_int',
    'check_pairs', 'load_dataset', 'load_datasets', 'check_method_options', 'parse_methods', 'open_method',
    'open_lpnsr', 'BUILD_ERRORS', 'finite_mean', 'finite_std', 'NETWORK_KINDS', 'match_saved_outputs',
    'open_saved_outputs'
]

logger = logging.getLogger('lpnsr_arch.bench')


def finite_mean(values: Sequence[float]) -> float:
    """The mean of the values that are not NaN (a metric undefined for an image is NaN); NaN when none is."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def finite_std(values: Sequence[float]) -> float:
    """The standard deviation (ddof 0) of the values that are not NaN; NaN when none is."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.std(finite)) if finite else math.nan

REQUIRED_BLOCKS = {'basicsr': ('network_g', ), 'lpnsr': tuple(f'network_{name}' for name in PIPELINE_NETWORKS
                                                              if name != 'noise')}
"""The options blocks each method kind cannot do without."""

NIQE_MIN_SIZE = 96
"""BasicSR's NIQE needs images of at least this many pixels per side after the border crop."""

Upscale = Callable[[Tensor, int], Tensor]
"""``upscale(lr01, seed) -> sr01``: (1, 3, H, W) -> (1, 3, sH, sW), both float in [0, 1]."""


NETWORK_KINDS = ('bicubic', 'basicsr', 'lpnsr')
"""The method kinds that compute their outputs; ``folder`` (saved outputs) is the one other kind."""


@dataclass
class Method:
    """A named upscaler; ``stochastic`` methods depend on the seed. A ``folder`` method has no ``upscale``: its
    ``saved_outputs`` map each dataset name to ``{image name: file}`` (:func:`open_saved_outputs`)."""
    name: str
    upscale: Optional[Upscale]
    stochastic: bool = False
    module: Optional[nn.Module] = None
    saved_outputs: Optional[Dict[str, Dict[str, Path]]] = None

    def output(self, pair: Optional[ImagePair], lr01: Tensor, *, seed: int, dataset: str) -> Tensor:
        """The (1, 3, sH, sW) output in [0, 1] for ``pair`` of ``dataset``: computed from ``lr01`` (1, 3, H, W) in
        [0, 1], or read from the saved file."""
        if self.saved_outputs is not None:
            if pair is None:
                raise ValueError(f'method {self.name} reads saved outputs: it needs the image they belong to')
            return read_image(self.saved_outputs[dataset][pair.name])[0]
        return self.upscale(lr01, seed)


@dataclass(frozen=True)
class MethodSpec:
    """A parsed ``[NAME=]KIND[:OPTIONS]`` argument (``text``: the argument as given, for messages)."""
    name: str
    kind: str
    options: Optional[str] = None
    text: str = ''


def add_run_arguments(parser: argparse.ArgumentParser, *, out_help: str, out_required: bool = False,
                      tile: bool = True, precision: bool = True) -> None:
    """Add the arguments the benchmark CLIs share: ``--tile`` (LPNSR LR tile override, 0: off), ``--precision``
    (fp32/bf16/fp16), ``--device`` (auto/cpu/cuda[:N]) and ``--out`` (the report folder, ``out_help``)."""
    if tile:
        parser.add_argument('--tile', type=non_negative_int, default=None, help='LPNSR LR tile override (0: off)')
    if precision:
        parser.add_argument('--precision', choices=tuple(PRECISIONS), default='fp32',
                            help='autocast precision of the LPNSR diffusion part (default fp32 on every device, '
                            'unlike lpnsr\'s bf16 on a GPU, so that tables compare like with like)')
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda, cuda:1, ...')
    parser.add_argument('--out', type=Path, required=out_required, default=None, help=out_help)


def parse_run_arguments(parser: argparse.ArgumentParser,
                        argv: Optional[Sequence[str]]) -> Tuple[argparse.Namespace, torch.device]:
    """Parse ``argv``, set up INFO logging, resolve ``--device`` and check ``--out`` (created later, by
    :func:`run_output_folder`): the start of every benchmark's ``main``. A device this machine lacks, or an ``--out``
    that cannot be a folder, is one ERROR line and ``SystemExit(2)``."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    with user_errors(logger, f'--device {args.device}: ', (RuntimeError, ValueError)):
        device = resolve_device(args.device)
    if args.out is not None:
        with user_errors(logger):
            check_output_folder(args.out, '--out')
    return args, device


@contextlib.contextmanager
def run_output_folder(args: argparse.Namespace) -> Iterator[None]:
    """Create ``--out`` (when given) on entry, so that a folder that cannot be created or written is refused before
    the run (one ERROR line and ``SystemExit(2)``); if the run inside is then refused (``SystemExit``, e.g. a
    checkpoint or a tile that only building a method finds wrong), remove again the folders this made while they are
    still empty: a refused run leaves no output folder behind."""
    made: List[Path] = []
    if args.out is not None:
        made = [folder for folder in (Path(args.out), *Path(args.out).parents) if not folder.exists()]
        with user_errors(logger):
            prepare_output_folder(args.out, '--out')
    try:
        yield
    except SystemExit:
        for folder in made:  # the deepest first
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def parse_method(text: str, kinds: Sequence[str] = NETWORK_KINDS) -> MethodSpec:
    """Parse ``[NAME=]KIND[:OPTIONS]`` (see the module docstring); ``kinds``: the kinds this benchmark takes."""
    head, _, options = text.partition(':')  # an '=' after the kind belongs to the path (e.g. runs/seed=7)
    name, _, kind = head.rpartition('=')
    if kind not in kinds:
        raise ValueError(f'method {text!r}: kind must be {" or ".join(kinds)}, got {kind!r}')
    if kind == 'folder' and not options:
        raise ValueError(f'method {text!r}: folder needs the folder of saved outputs (folder:path/to/outputs)')
    if kind != 'bicubic' and not options:
        raise ValueError(f'method {text!r}: {kind} needs an options file ({kind}:path/to/options.yml)')
    if kind == 'bicubic':
        default_name = kind
    elif kind == 'folder':  # folder-<the last part of the path that is not the bare {dataset} placeholder>
        parts = [part for part in Path(options).parts if part != '{dataset}']
        default_name = f'folder-{parts[-1] if parts else options}'
    else:
        default_name = f'{kind}-{Path(options).stem.lstrip("@")}'
    return MethodSpec(name=name or default_name, kind=kind, options=options or None, text=text)


def check_method_options(spec: MethodSpec) -> None:
    """Check, without building anything, that the options of ``spec`` can be read and have the blocks its kind
    needs: ``FileNotFoundError`` / ``ValueError`` (missing file, malformed YAML) or ``KeyError`` (unknown preset, a
    missing block), each naming the file or key."""
    if spec.kind in ('bicubic', 'folder'):  # a folder is checked against the datasets (open_saved_outputs)
        return
    if spec.kind == 'lpnsr' and spec.options.startswith('@'):
        from lpnsr_arch.bench.presets import preset_options
        preset_options(spec.options[1:])
        return
    options = load_options(spec.options)
    missing = [block for block in REQUIRED_BLOCKS[spec.kind] if not options.get(block)]
    if missing:
        raise KeyError(f'{spec.options} has no {" / ".join(missing)} block (needed by a {spec.kind} method)')


def parse_methods(texts: Sequence[str], option: str = '--method', kind: Optional[str] = None,
                  kinds: Sequence[str] = NETWORK_KINDS) -> List[MethodSpec]:
    """Parse and check (:func:`check_method_options`) every method argument before any runs; a mistake is one ERROR
    line naming ``option`` and the argument, and ``SystemExit(2)``. With ``kind``, every text is an options path or
    ``@PRESET`` of that kind (``bench.consistency``'s ``--pipeline``); otherwise ``kinds`` are the kinds taken."""
    specs = []
    for text in texts:
        if kind:
            spec = MethodSpec(f'{kind}-{Path(text).stem.lstrip("@")}', kind, text, text)
        else:
            with user_errors(logger, f'{option}: '):  # parse_method's message quotes the argument
                spec = parse_method(text, kinds)
        with user_errors(logger, f'{option} {text}: '):
            check_method_options(spec)
        specs.append(spec)
    return specs


def open_method(spec: MethodSpec, *, device: torch.device, noise: Optional[str] = None, tile: Optional[int] = None,
                precision: str = 'fp32') -> Method:
    """:func:`build_method` at a CLI boundary: an options mistake found while building (a network argument, a
    checkpoint, a tile the networks cannot take) is one ERROR line naming the ``--method`` and ``SystemExit(2)``."""
    with user_errors(logger, f'--method {spec.text or spec.kind}: ', BUILD_ERRORS):
        return build_method(spec, device=device, noise=noise, tile=tile, precision=precision)


def open_lpnsr(spec: MethodSpec, *, device: torch.device, tile: Optional[int],
               option: str = '--pipeline') -> Tuple[LPNSRPipeline, int, int]:
    """The LPNSR pipeline of ``spec`` and its settled ``(tile, tile_overlap)``
    (:meth:`~lpnsr_arch.pipeline.LPNSRPipeline.resolve_tiling`), at a CLI boundary like :func:`open_method`."""
    with user_errors(logger, f'{option} {spec.text or spec.options}: ', BUILD_ERRORS):
        pipeline = build_lpnsr(spec.options, device)
        tile, tile_overlap = pipeline.resolve_tiling(tile, None)
    return pipeline, tile, tile_overlap


def _bicubic(scale: int) -> Upscale:

    def upscale(lr01: Tensor, seed: int) -> Tensor:
        return bicubic_upscale(lr01, scale).clamp(0.0, 1.0)

    return upscale


def _basicsr_network(options_path: str, device: torch.device) -> nn.Module:
    from basicsr.archs import build_network

    from lpnsr_arch.weights import load_network_from_options

    options = load_options(options_path)
    if 'network_g' not in options:
        raise KeyError(f'{options_path}: no network_g block')
    net = build_network(dict(options['network_g']))
    if load_network_from_options(net, options.get('path'), 'g') is None:
        logger.warning(f'{options_path}: no path.pretrain_network_g; the network has random weights')
    return net.to(device).eval()


def build_method(spec: MethodSpec, *, device: torch.device, scale: int = 4, noise: Optional[str] = None,
                 tile: Optional[int] = None, precision: str = 'fp32') -> Method:
    """Instantiate a :class:`Method` from its spec on ``device``. An LPNSR ``tile`` (None: the options' own) is
    settled as ``lpnsr`` does (:meth:`~lpnsr_arch.pipeline.LPNSRPipeline.resolve_tiling`): ``ValueError`` for a tile
    the networks cannot take."""
    if spec.kind == 'bicubic':
        return Method(spec.name, _bicubic(scale))
    if spec.kind == 'basicsr':
        net = _basicsr_network(spec.options, device)

        @torch.no_grad()
        def run_network(lr01: Tensor, seed: int) -> Tensor:
            return net(lr01.to(device)).clamp(0.0, 1.0)

        return Method(spec.name, run_network, module=net)
    pipeline = build_lpnsr(spec.options, device)
    tile, tile_overlap = pipeline.resolve_tiling(tile, None)

    def run_pipeline(lr01: Tensor, seed: int) -> Tensor:
        return pipeline(lr01.to(device), seed=seed, noise=noise, tile=tile, tile_overlap=tile_overlap,
                        precision=precision)

    return Method(spec.name, run_pipeline, stochastic=True, module=pipeline)


def build_lpnsr(options: str, device: torch.device) -> LPNSRPipeline:
    """An LPNSR pipeline from an options path or ``@preset`` (random weights)."""
    if options.startswith('@'):
        from lpnsr_arch.bench.presets import preset_options
        return LPNSRPipeline.from_options(preset_options(options[1:]), device)
    return LPNSRPipeline.from_options(options, device)


# --------------------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImagePair:
    """One benchmark image: the LQ file and, when the dataset has one, its GT file."""
    name: str
    lq: Path
    gt: Optional[Path] = None


_LQ_SUFFIX = re.compile(r'[_-]?(x\d+|lq|lr|LQ|LR)$')


def _image_files(folder: Path) -> List[Path]:
    """The image files of ``folder`` (sorted); ``FileNotFoundError`` / ``NotADirectoryError`` naming it."""
    if not folder.exists():
        raise FileNotFoundError(f'folder {folder} does not exist')
    if not folder.is_dir():
        raise NotADirectoryError(f'{folder} is a file, not a folder')
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def load_pairs(gt_dir: Optional[Path], lq_dir: Path, limit: Optional[int] = None) -> List[ImagePair]:
    """Match LQ to GT files by name (an LQ suffix such as ``x4``, ``_lq`` is ignored); GT may be absent."""
    lq_files = _image_files(lq_dir)
    if gt_dir is None:
        pairs = [ImagePair(p.stem, p) for p in lq_files]
    else:
        gt_files = _image_files(gt_dir)
        gt_by_stem = {p.stem: p for p in gt_files}
        stems = Counter(p.stem for p in gt_files)
        if len(gt_by_stem) < len(gt_files):
            shared = sorted(p.name for p in gt_files if stems[p.stem] > 1)
            raise ValueError(f'{gt_dir}: GT files share a name and differ only in extension: {name_list(shared)} '
                             '(which one is the GT is ambiguous)')
        pairs, unmatched = [], []
        for lq in lq_files:
            gt = gt_by_stem.get(lq.stem) or gt_by_stem.get(_LQ_SUFFIX.sub('', lq.stem))
            if gt is None:
                unmatched.append(lq.name)
            else:
                pairs.append(ImagePair(lq.stem, lq, gt))
        if unmatched:
            raise ValueError(f'{lq_dir}: no GT file in {gt_dir} of the same name (an LQ suffix such as x4 or _lq '
                             f'aside) for {len(unmatched)} image(s): {name_list(unmatched)}')
    if not pairs:
        raise ValueError(f'{lq_dir}: no image files ({", ".join(IMAGE_EXTENSIONS)})')
    return pairs[:limit] if limit else pairs


SSIM_WINDOW = 11
"""BasicSR's SSIM filters with an 11 x 11 Gaussian and keeps the valid part: a scored image needs more pixels per side
after the border crop."""


def check_pairs(pairs: Sequence[ImagePair], scale: int = 4, crop_border: int = 0) -> None:
    """Read every image of ``pairs`` once, before a run: :class:`~lpnsr_arch.imageio.ImageReadError` names a file
    that is not a readable image, ``ValueError`` (:func:`check_gt_size`) a GT that is not ``scale`` x its LQ, or a
    pair whose output, less ``crop_border`` pixels on each side, is too small for SSIM."""
    for pair in pairs:
        lr01, _ = read_image(pair.lq)
        sr_size = (lr01.shape[-2] * scale, lr01.shape[-1] * scale)
        if pair.gt is not None:
            gt01, _ = read_image(pair.gt)
            check_gt_size(pair.gt, gt01.shape, sr_size, scale)
            if min(sr_size) - 2 * crop_border <= SSIM_WINDOW - 1:
                raise ValueError(f'{pair.lq}: its x{scale} output {sr_size} less --crop-border {crop_border} on each '
                                 f'side is too small to score (SSIM needs more than {SSIM_WINDOW - 1} px per side)')


def load_dataset(text: str, limit: Optional[int] = None, scale: int = 4,
                 crop_border: int = 0) -> Tuple[str, List[ImagePair]]:
    """``NAME=GT_DIR,LQ_DIR`` -> (name, its checked pairs): :func:`parse_dataset`, :func:`load_pairs`,
    :func:`check_pairs`."""
    name, gt_dir, lq_dir = parse_dataset(text)
    pairs = load_pairs(gt_dir, lq_dir, limit)
    check_pairs(pairs, scale, crop_border)
    return name, pairs


def load_datasets(texts: Sequence[str], limit: Optional[int] = None, scale: int = 4,
                  crop_border: int = 0) -> List[Tuple[str, List[ImagePair]]]:
    """Every ``--dataset`` argument, loaded and checked (:func:`load_dataset`) before any method runs; a mistake is
    one ERROR line naming the argument and the file, and ``SystemExit(2)``."""
    datasets: List[Tuple[str, List[ImagePair]]] = []
    for text in texts:
        with user_errors(logger, f'--dataset {text}: '):
            name = parse_dataset(text)[0]
            if name in (known for known, _ in datasets):
                raise ValueError(f'the name {name!r} is given to two datasets (their rows would mix); rename one')
            datasets.append(load_dataset(text, limit, scale, crop_border))
    return datasets


def parse_dataset(text: str) -> Tuple[str, Optional[Path], Path]:
    """``NAME=GT_DIR,LQ_DIR`` or ``NAME=,LQ_DIR`` (no GT) -> (name, gt_dir, lq_dir)."""
    name, sep, folders = text.partition('=')
    gt, comma, lq = folders.partition(',')
    if not sep or not comma or not lq:
        raise ValueError(f'dataset {text!r}: expected NAME=GT_DIR,LQ_DIR (GT_DIR may be empty)')
    return name, (Path(gt) if gt else None), Path(lq)


def match_saved_outputs(folder: Path, pairs: Sequence[ImagePair]) -> Dict[str, Path]:
    """``{pair.name: file}``: each LQ image's saved output in ``folder``, named as the LQ image (its stem, or the stem
    less an LQ suffix such as ``x4``), exactly or followed by ``_SUFFIX`` (``lpnsr_arch/inference.py`` writes
    ``<name>_<suffix>.<ext>``).

    A file belongs to the image whose name it matches best: exactly before ``_SUFFIX``, and the longer name first (so
    ``a_b_out.png`` is ``a_b``'s output, not ``a``'s). ``FileNotFoundError`` / ``ValueError`` name the folder and
    every image with no output or with more than one, and every file that two images match equally well."""
    files = _image_files(folder)
    names = {pair.name: {pair.name, _LQ_SUFFIX.sub('', pair.name)} for pair in pairs}
    claims: Dict[str, List[Tuple[bool, Path]]] = {pair.name: [] for pair in pairs}  # image -> (exact, file)
    shared: List[str] = []
    for file in files:
        ranked = [((file.stem == name, len(name)), image) for image, image_names in names.items()
                  for name in image_names if file.stem == name or file.stem.startswith(f'{name}_')]
        if not ranked:
            continue
        best = max(rank for rank, _ in ranked)
        owners = sorted({image for rank, image in ranked if rank == best})
        if len(owners) > 1:
            shared.append(f'{file.name} ({name_list(owners)})')
        else:
            claims[owners[0]].append((best[0], file))
    if shared:
        raise ValueError(f'{folder}: files that match more than one image equally well: {"; ".join(shared)}')
    matched: Dict[str, Path] = {}
    missing: List[str] = []
    ambiguous: List[str] = []
    for image, claimed in claims.items():
        candidates = [file for exact, file in claimed if exact] or [file for _, file in claimed]
        if len(candidates) == 1:
            matched[image] = candidates[0]
        elif candidates:
            ambiguous.append(f'{image} ({name_list([file.name for file in candidates])})')
        else:
            missing.append(image)
    if missing:
        raise FileNotFoundError(f'{folder}: no saved output for {len(missing)} image(s): {name_list(missing)} '
                                '(expected <name>.<ext> or <name>_<suffix>.<ext>)')
    if ambiguous:
        raise ValueError(f'{folder}: more than one saved output for {"; ".join(ambiguous)}')
    return matched


def open_saved_outputs(spec: MethodSpec, datasets: Sequence[Tuple[str, Sequence[ImagePair]]],
                       scale: int = 4) -> Method:
    """A ``folder`` method: its outputs for every dataset (``{dataset}`` in the folder replaced by the dataset's
    name) matched (:func:`match_saved_outputs`), each read and checked to be ``scale`` x its LQ image; a mistake
    is one ERROR line naming the ``--method``, the folder or file, and ``SystemExit(2)``."""
    saved: Dict[str, Dict[str, Path]] = {}
    with user_errors(logger, f'--method {spec.text}: '):
        if '{dataset}' in spec.options and not all(dataset for dataset, _ in datasets):
            raise ValueError('{dataset} in the folder needs named datasets (a comparison sheet has none)')
        scored_for: Dict[Path, str] = {}  # file -> the dataset it is scored for
        for dataset, pairs in datasets:
            outputs = match_saved_outputs(Path(spec.options.replace('{dataset}', dataset)), pairs)
            for pair in pairs:
                other = scored_for.setdefault(outputs[pair.name].resolve(), dataset)
                if other != dataset:
                    raise ValueError(f'{outputs[pair.name]} would be scored for both datasets {other} and {dataset} '
                                     '(their images share a name): give each its folder with {dataset} in DIR')
                lr01, _ = read_image(pair.lq)
                out01, _ = read_image(outputs[pair.name])
                expected = (lr01.shape[-2] * scale, lr01.shape[-1] * scale)
                if tuple(out01.shape[-2:]) != expected:
                    raise ValueError(f'{outputs[pair.name]}: {tuple(out01.shape[-2:])} is not x{scale} its LQ image '
                                     f'{pair.lq} ({expected} expected)')
            saved[dataset] = outputs
    return Method(spec.name, None, saved_outputs=saved)


# --------------------------------------------------------------------------------------------------------------
# Metrics (BasicSR's, on 8-bit images as a saved result would be)
# --------------------------------------------------------------------------------------------------------------
def to_bgr255(image01: Tensor) -> np.ndarray:
    """(1, 3, H, W) RGB float in [0, 1] -> (H, W, 3) BGR float64 in [0, 255], rounded to 8-bit levels."""
    array = image01[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()[:, :, ::-1]
    return np.round(array * 255.0).astype(np.float64)


def check_gt_size(path: Path, gt_size: Sequence[int], sr_size: Sequence[int], scale: int = 4) -> None:
    """Raise ``ValueError`` naming ``path`` unless the GT (height, width) is the SR size plus a mod-crop remainder
    (fewer than ``scale`` pixels per side): anything else is a pair at another scale or a wrong file."""
    (gt_h, gt_w), (sr_h, sr_w) = tuple(gt_size[-2:]), tuple(sr_size[-2:])
    if not (0 <= gt_h - sr_h < scale and 0 <= gt_w - sr_w < scale):
        raise ValueError(f'{path}: GT {(gt_h, gt_w)} does not match the x{scale} output {(sr_h, sr_w)} (up to a '
                         f'mod-crop of fewer than {scale} px): another scale, or not this LR image\'s GT')


def read_gt(path: Path, sr_shape: Sequence[int], scale: int = 4) -> np.ndarray:
    """The GT as BGR [0, 255], cropped to the SR size (mod-crop; see :func:`check_gt_size`)."""
    gt01, _ = read_image(path)
    check_gt_size(path, gt01.shape, sr_shape, scale)
    height, width = sr_shape[-2:]
    return to_bgr255(gt01[:, :, :height, :width])


def psnr_ssim_y(sr_bgr: np.ndarray, gt_bgr: np.ndarray, crop_border: int) -> Tuple[float, float]:
    """BasicSR PSNR and SSIM on the Y channel, ``crop_border`` pixels removed."""
    from basicsr.metrics import calculate_psnr, calculate_ssim
    psnr = calculate_psnr(sr_bgr, gt_bgr, crop_border=crop_border, input_order='HWC', test_y_channel=True)
    ssim = calculate_ssim(sr_bgr, gt_bgr, crop_border=crop_border, input_order='HWC', test_y_channel=True)
    return float(psnr), float(ssim)


def niqe_y(sr_bgr: np.ndarray, crop_border: int) -> float:
    """BasicSR NIQE (Y channel), or NaN where it is undefined.

    NIQE fits a Gaussian to features of 96x96 blocks: an image with fewer than two whole blocks after the border crop
    (or with degenerate statistics, e.g. a flat image) has no covariance, so it gets NaN and a log line.
    """
    height, width = (side - 2 * crop_border for side in sr_bgr.shape[:2])
    if min(height, width) < NIQE_MIN_SIZE or (height // NIQE_MIN_SIZE) * (width // NIQE_MIN_SIZE) < 2:
        return math.nan
    import warnings

    from basicsr.metrics import calculate_niqe
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        try:
            return float(calculate_niqe(sr_bgr, crop_border=crop_border, input_order='HWC', convert_to='y'))
        except np.linalg.LinAlgError as error:
            logger.warning(f'NIQE undefined for this image ({error}); reported as n/a')
            return math.nan


def lpips_note() -> str:
    """Why LPIPS/DISTS/CLIP-IQA/MUSIQ are not computed (their backbone weights are not available offline)."""
    return ('LPIPS, DISTS, CLIP-IQA and MUSIQ skipped: their backbone weights (VGG/AlexNet/CLIP) need a download; '
            'NIQE is n/a for images with fewer than two 96-px blocks after the border crop')


# --------------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Table:
    """Rows of one benchmark, plus notes."""
    title: str
    rows: List[Dict[str, object]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return 'n/a' if math.isnan(value) else f'{value:.4g}'
    return '' if value is None else str(value)


def report(table: Table, out_dir: Optional[Path], stem: str, meta: Optional[Mapping[str, object]] = None, *,
           echo: bool = True) -> None:
    """Print ``table`` as aligned text (unless ``echo`` is false) and, with ``out_dir``, write ``<stem>.csv`` and
    ``<stem>.json``."""
    columns: List[str] = []
    for row in table.rows:
        columns.extend(key for key in row if key not in columns)
    cells = [[_cell(row.get(column)) for column in columns] for row in table.rows]
    widths = [max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)]
    lines = [table.title, '  '.join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ['  '.join(c.ljust(w) for c, w in zip(line, widths)) for line in cells]
    lines += [f'note: {note}' for note in table.notes]
    if echo:
        print('\n'.join(lines))
    if out_dir is None:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    replaced = [path.name for path in (out_dir / f'{stem}.csv', out_dir / f'{stem}.json') if path.exists()]
    if replaced:
        logger.warning(f'replacing {" and ".join(replaced)} in {out_dir} (an earlier run\'s results)')
    with (out_dir / f'{stem}.csv').open('w', newline='', encoding='utf-8') as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table.rows)
    rows = [{key: _json_value(value) for key, value in row.items()} for row in table.rows]
    payload = {'title': table.title, 'rows': rows, 'notes': table.notes, 'meta': dict(meta or {})}
    (out_dir / f'{stem}.json').write_text(json.dumps(payload, indent=2, default=str), encoding='utf-8')
    logger.info(f'wrote {out_dir / stem}.csv and .json')


def _json_value(value: object) -> object:
    """NaN -> null (strict JSON)."""
    return None if isinstance(value, float) and math.isnan(value) else value
