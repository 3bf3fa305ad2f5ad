"""Conformance checker: do this project's networks and sampler reproduce the official outputs?

Reads a vector file in the format of ``shared/conformance/README.md`` (a safetensors file holding the model configs as
JSON metadata, official-key weights, inputs and official outputs), builds every network from the file's configs, loads
the weights strictly and reports the max abs error of every case::

    python -m lpnsr_arch.conformance path/to/vectors.safetensors [--json out.json]

Exit status 1 when any case is above tolerance (1e-4 per module, 1e-3 for the 4-step chain).
:func:`write_vectors` writes a file of the same format from this project's own networks (random weights), which the
test suite uses to check the checker itself when the official vectors are not available.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional

import torch
from torch import Tensor

import lpnsr_arch  # noqa: F401  (compat shim + registries before BasicSR is used)
from lpnsr_arch.archs.noise_predictor_arch import LPNSRNoisePredictor
from lpnsr_arch.archs.resshift_unet_arch import LPNSRResShiftUNet
from lpnsr_arch.archs.upsampler_arch import LPNSRBicubicUpsampler
from lpnsr_arch.archs.vqgan_arch import LPNSRVQAutoencoder
from lpnsr_arch.cli_errors import error_line
from lpnsr_arch.diffusion import DiffusionConfig, NormalDraws, ResShiftDiffusion
from lpnsr_arch.pipeline import InferenceDefaults, LPNSRPipeline
from lpnsr_arch.weights import CheckpointError, load_weights, prefixed

logger = logging.getLogger(__name__)

MODULE_TOLERANCE = 1e-4
CHAIN_TOLERANCE = 1e-3
SCHEDULE_NAMES = ('sqrt_etas', 'etas', 'posterior_mean_coef1', 'posterior_mean_coef2', 'posterior_variance',
                  'posterior_log_variance_clipped')


@dataclass
class CaseResult:
    """One compared output: ``max_abs_error`` against the vector file, and whether it is within ``tolerance``."""
    name: str
    max_abs_error: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_error <= self.tolerance


@dataclass
class VectorModels:
    """The networks and diffusion built from a vector file's configs."""
    unet: LPNSRResShiftUNet
    noise_predictor: LPNSRNoisePredictor
    vq: LPNSRVQAutoencoder
    diffusion: ResShiftDiffusion

    def pipeline(self, scale: int = 4) -> LPNSRPipeline:
        """The inference pipeline with the bicubic pre-upsampler (the vectors' chain does not use SwinIR)."""
        return LPNSRPipeline(upsampler=LPNSRBicubicUpsampler(scale=scale), autoencoder=self.vq, denoiser=self.unet,
                             diffusion=self.diffusion, noise_predictor=self.noise_predictor,
                             defaults=InferenceDefaults.from_dict({'scale': scale}))


def read_vectors(path: Path) -> tuple[Dict[str, object], Dict[str, Tensor]]:
    """(configs, tensors) of a vector file; a missing ``config`` metadata entry is an error naming the file."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    if not path.is_file():
        raise FileNotFoundError(f'vector file not found: {path}')
    try:
        with safe_open(str(path), 'pt') as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except Exception as err:  # corrupt header, truncated file, ...
        raise CheckpointError(f'{path}: not a readable safetensors vector file ({err})') from err
    if 'config' not in metadata:
        raise KeyError(f'{path}: the metadata has no "config" entry (see shared/conformance/README.md)')
    try:
        config = json.loads(metadata['config'])
    except json.JSONDecodeError as err:
        raise ValueError(f'{path}: the "config" metadata entry is not valid JSON ({err})') from err
    for key in ('unet', 'noise_predictor', 'vq', 'diffusion'):
        if key not in config:
            raise KeyError(f'{path}: config lacks the {key!r} section')
    return config, tensors


def build_models(config: Mapping[str, Mapping], tensors: Mapping[str, Tensor],
                 source: str = '<vectors>') -> VectorModels:
    """Build the three networks from ``config`` and load their weights strictly from ``tensors``."""
    def build(section: str, factory):
        try:
            return factory(**config[section])
        except (TypeError, ValueError) as err:
            raise ValueError(f'{source}: config section {section!r} does not build a network: {err}') from err

    try:
        diffusion = ResShiftDiffusion(DiffusionConfig.from_dict(dict(config['diffusion'])))
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{source}: config section 'diffusion' is not a valid schedule: {err}") from err
    models = VectorModels(unet=build('unet', LPNSRResShiftUNet),
                          noise_predictor=build('noise_predictor', LPNSRNoisePredictor),
                          vq=build('vq', LPNSRVQAutoencoder), diffusion=diffusion)
    for prefix, net in (('unet.', models.unet), ('noise_predictor.', models.noise_predictor), ('vq.', models.vq)):
        state = prefixed(tensors, prefix)
        if not state:
            raise CheckpointError(f'{source}: no weights under the prefix {prefix!r}')
        load_weights(net, state, param_key=None, strict=True, source=f'{source} [{prefix}*]')
        net.eval()
    return models


def _max_err(a: Tensor, b: Tensor) -> float:
    if a.shape != b.shape:
        raise ValueError(f'shape mismatch: computed {tuple(a.shape)} vs expected {tuple(b.shape)}')
    return (a.double() - b.double()).abs().max().item()


def _case_sizes(tensors: Mapping[str, Tensor], group: str) -> List[str]:
    return sorted({k.split('.')[2] for k in tensors if k.startswith(f'case.{group}.')})


@torch.no_grad()
def run_cases(models: VectorModels, tensors: Mapping[str, Tensor]) -> List[CaseResult]:
    """Recompute every case present in ``tensors`` and compare."""
    results: List[CaseResult] = []
    table = models.diffusion.table()
    for name in SCHEDULE_NAMES:
        key = f'schedule.{name}'
        if key in tensors:
            results.append(CaseResult(key, _max_err(torch.as_tensor(table[name]), tensors[key]), MODULE_TOLERANCE))
    for size in _case_sizes(tensors, 'unet'):
        case = prefixed(tensors, f'case.unet.{size}.')
        out = models.unet(case['x'], case['t'], lq=case['lq'])
        results.append(CaseResult(f'unet.{size}', _max_err(out, case['out']), MODULE_TOLERANCE))
    for size in _case_sizes(tensors, 'np'):
        case = prefixed(tensors, f'case.np.{size}.')
        mean, logvar = models.noise_predictor(case['z_t'], case['pred_x0'], case['lq'], case['t'], mode='dist')
        results.append(CaseResult(f'noise_predictor.{size}.mean', _max_err(mean, case['mean']), MODULE_TOLERANCE))
        results.append(CaseResult(f'noise_predictor.{size}.logvar', _max_err(logvar, case['logvar']), MODULE_TOLERANCE))
    if 'case.vq.image' in tensors:
        case = prefixed(tensors, 'case.vq.')
        results.append(CaseResult('vq.encode', _max_err(models.vq.encode(case['image']), case['encoded']),
                                  MODULE_TOLERANCE))
        results.append(CaseResult('vq.decode_quantized', _max_err(models.vq.decode(case['encoded']),
                                                                  case['decoded_quantized']), MODULE_TOLERANCE))
        results.append(CaseResult('vq.decode_unquantized',
                                  _max_err(models.vq.decode(case['encoded'], quantize=False),
                                           case['decoded_unquantized']), MODULE_TOLERANCE))
    if 'case.chain.lr' in tensors:
        case = prefixed(tensors, 'case.chain.')
        sr, final = chain_outputs(models, case)
        results.append(CaseResult('chain.sr_before_color', _max_err(sr, case['sr_before_color']), CHAIN_TOLERANCE))
        results.append(CaseResult('chain.sr_final', _max_err(final, case['sr_final']), CHAIN_TOLERANCE))
    return results


def chain_outputs(models: VectorModels, case: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """The official ``sample_func`` output in [-1, 1] and the colour-corrected image in [0, 1] for ``case``
    (``lr`` and the injected ``draw0..draw4``), computed by the project's inference pipeline."""
    pipeline = models.pipeline()
    draw_names = sorted((k for k in case if k.startswith('draw')), key=lambda k: int(k[len('draw'):]))  # 2 < 10
    draws = NormalDraws(injected=[case[k] for k in draw_names])
    sr = pipeline.sample_func(case['lr'], draws=draws, noise='learned', precision='fp32')
    final = pipeline.color_correct(sr * 0.5 + 0.5, case['lr'], color_fix='wavelet')
    return sr, final


def check_file(path: Path) -> List[CaseResult]:
    """Build, load and compare everything in the vector file at ``path``."""
    config, tensors = read_vectors(path)
    models = build_models(config, tensors, source=str(path))
    results = run_cases(models, tensors)
    if not results:
        raise ValueError(f'{path}: holds no comparison cases (no "case.*" or "schedule.*" tensors)')
    return results


# ------------------------------------------------------------------------------------------------------------------
# Writing vector files (this project's outputs), for testing the checker without the official vectors
# ------------------------------------------------------------------------------------------------------------------
def _perturb_(net: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every parameter a random non-zero value (zero-initialised convs would hide wiring errors)."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))


@torch.no_grad()
def write_vectors(path: Path, config: Mapping[str, Mapping], *, seed: int = 0, size: Optional[int] = None) -> Path:
    """Write a vector file in the official format, computed by this project's networks (random weights).

    ``config`` has the ``unet``, ``noise_predictor``, ``vq`` and ``diffusion`` sections of the official format;
    ``size`` is the LR/latent size of the cases (default: the UNet's ``image_size``; ``s2`` uses twice that).
    """
    from safetensors.torch import save_file
    gen = torch.Generator().manual_seed(seed)
    models = VectorModels(unet=LPNSRResShiftUNet(**config['unet']),
                          noise_predictor=LPNSRNoisePredictor(**config['noise_predictor']),
                          vq=LPNSRVQAutoencoder(**config['vq']),
                          diffusion=ResShiftDiffusion(DiffusionConfig.from_dict(config['diffusion'])))
    tensors: Dict[str, Tensor] = {}
    for prefix, net in (('unet.', models.unet), ('noise_predictor.', models.noise_predictor), ('vq.', models.vq)):
        _perturb_(net, gen)
        net.eval()
        tensors.update({prefix + k: v.clone() for k, v in net.state_dict().items()})
    for name in SCHEDULE_NAMES:
        tensors[f'schedule.{name}'] = torch.as_tensor(models.diffusion.table()[name], dtype=torch.float64)
    base = size or int(config['unet']['image_size'])
    steps = models.diffusion.num_timesteps
    latent_ch = models.vq.latent_channels

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen)

    for tag, s in (('s1', base), ('s2', 2 * base)):
        t = torch.randint(0, steps, (2, ), generator=gen)
        x, lq = randn(2, latent_ch, s, s), randn(2, 3, s, s).clamp(-1, 1)
        tensors.update({f'case.unet.{tag}.x': x, f'case.unet.{tag}.t': t, f'case.unet.{tag}.lq': lq,
                        f'case.unet.{tag}.out': models.unet(x, t, lq=lq)})
        z_t, pred_x0 = randn(2, latent_ch, s, s), randn(2, latent_ch, s, s)
        mean, logvar = models.noise_predictor(z_t, pred_x0, lq, t, mode='dist')
        tensors.update({f'case.np.{tag}.z_t': z_t, f'case.np.{tag}.pred_x0': pred_x0, f'case.np.{tag}.lq': lq.clone(),
                        f'case.np.{tag}.t': t.clone(), f'case.np.{tag}.mean': mean, f'case.np.{tag}.logvar': logvar})
    image = randn(1, 3, 4 * base, 4 * base).clamp(-1, 1)
    encoded = models.vq.encode(image)
    tensors.update({'case.vq.image': image, 'case.vq.encoded': encoded,
                    'case.vq.decoded_quantized': models.vq.decode(encoded),
                    'case.vq.decoded_unquantized': models.vq.decode(encoded, quantize=False)})
    chain = {'lr': randn(1, 3, base, base).clamp(-1, 1)}
    chain.update({f'draw{i}': randn(1, latent_ch, base, base) for i in range(steps + 1)})
    chain['sr_before_color'], chain['sr_final'] = chain_outputs(models, chain)
    tensors.update({f'case.chain.{k}': v for k, v in chain.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
              metadata={'config': json.dumps(config), 'draw_order': 'prior, then t = T-1 .. 0'})
    return path


# ------------------------------------------------------------------------------------------------------------------
def report(results: List[CaseResult], stream=sys.stdout) -> None:
    """Print one line per case and a summary."""
    width = max(len(r.name) for r in results)
    for r in results:
        stream.write(f'{r.name:<{width}}  max|err| {r.max_abs_error:.3e}  tol {r.tolerance:.0e}  '
                     f'{"ok" if r.passed else "FAIL"}\n')
    failed = [r.name for r in results if not r.passed]
    verdict = 'all within tolerance' if not failed else f'above tolerance: {", ".join(failed)}'
    stream.write(f'{len(results)} cases compared; {verdict}\n')


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m lpnsr_arch.conformance', description=__doc__.split('\n\n')[0])
    parser.add_argument('vectors', type=Path, help='a conformance vector file (.safetensors)')
    parser.add_argument('--json', type=Path, default=None, help='also write the results as JSON here')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
    try:
        results = check_file(args.vectors)
    except (CheckpointError, KeyError, FileNotFoundError, TypeError, ValueError) as err:
        logger.error('%s', error_line(err))
        return 2
    report(results)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {'passed': r.passed} for r in results], indent=1))
    return 0 if all(r.passed for r in results) else 1


if __name__ == '__main__':
    sys.exit(main())
