"""Every options file the project ships passes the checks a run would make, without building a network or reading a
checkpoint or an image: a typo in a shipped recipe fails here, not an hour into someone's training.

- training and test recipes (``model_type``): the model class's own ``check_options`` (the diffusion models), the
  Real-ESRGAN degradation keys and the crop size (recipes that degrade on the fly), every ``network_*`` type
  registered and its arguments accepted by the constructor, every dataset type registered;
- pipeline files (``lpnsr_arch.inference --opt``): the ``inference`` and ``diffusion`` blocks and the four networks;
- network files (the benchmarks' ``basicsr:OPTIONS.yml`` methods): ``network_g``.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

import lpnsr_arch  # noqa: F401  (registers the plugin's classes before the registries are read)
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, MODEL_REGISTRY
from lpnsr_arch.data.degradation import training_gt_size, validate_degradation_opt
from lpnsr_arch.diffusion import DiffusionConfig
from lpnsr_arch.pipeline import PIPELINE_NETWORKS, InferenceDefaults

OPTIONS = Path(__file__).resolve().parents[1] / 'options'
OPTION_FILES = sorted(OPTIONS.rglob('*.yml'))


def _load(path: Path) -> Dict:
    opt = yaml.safe_load(path.read_text(encoding='utf-8'))
    assert isinstance(opt, dict), f'{path}: not a YAML mapping'
    return opt


LOADED = {path: _load(path) for path in OPTION_FILES}
"""Each shipped options file, read once."""


def _recipes() -> List[Path]:
    return [path for path, opt in LOADED.items() if 'model_type' in opt]


def _pipelines() -> List[Path]:
    return [path for path, opt in LOADED.items() if 'model_type' not in opt and 'network_noise' in opt]


def _network_files() -> List[Path]:
    return [path for path, opt in LOADED.items() if not {'model_type', 'network_noise'} & set(opt)]


def check_network_block(name: str, block: Dict) -> None:
    """``block``'s ``type`` is registered and its constructor takes the other keys (nothing is built)."""
    assert isinstance(block, dict) and 'type' in block, f'{name}: a block with a type'
    network_class = ARCH_REGISTRY.get(block['type'])
    kwargs = {key: value for key, value in block.items() if key != 'type'}
    try:
        inspect.signature(network_class).bind(**kwargs)
    except TypeError as error:
        raise AssertionError(f'{name} ({block["type"]}): {error}') from error


def test_the_collection_covers_every_kind_of_file():
    """The control: the shipped recipes and pipeline files are all found (a glob that finds nothing checks nothing)."""
    names = {path.relative_to(OPTIONS).as_posix() for path in OPTION_FILES}
    assert {'train_lpnsr_x4.yml', 'train_resshift_x4_scratch.yml', 'demo_model/03d_noise_predictor_lpnsr_continue.yml',
            'test_lpnsr_demo_x4.yml'} <= {p.relative_to(OPTIONS).as_posix() for p in _recipes()}
    assert {'inference_lpnsr_official.yml', 'demo/inference_lpnsr_demo.yml'} <= {
        p.relative_to(OPTIONS).as_posix() for p in _pipelines()}
    assert 'demo/test_rrdbnet_upsampler_demo.yml' in {p.relative_to(OPTIONS).as_posix() for p in _network_files()}
    assert len(names) == len(_recipes()) + len(_pipelines()) + len(_network_files())


def test_the_network_check_catches_a_misspelt_argument():
    """The control of :func:`check_network_block`: it is not satisfied by any block."""
    block = dict(LOADED[OPTIONS / 'demo' / 'inference_lpnsr_demo.yml']['network_unet'])
    check_network_block('network_unet', block)
    with pytest.raises(AssertionError, match=r'network_unet \(LPNSRResShiftUNet\).*windw_size'):
        check_network_block('network_unet', dict(block, windw_size=8))
    with pytest.raises(KeyError, match='NoSuchNet'):
        check_network_block('network_unet', dict(block, type='NoSuchNet'))


@pytest.mark.parametrize('path', _recipes(), ids=lambda p: p.relative_to(OPTIONS).as_posix())
def test_a_shipped_recipe_passes_the_checks_of_a_run(path: Path):
    opt = LOADED[path]
    is_train = 'train' in opt
    model_class = MODEL_REGISTRY.get(opt['model_type'])
    check = getattr(model_class, 'check_options', None)
    if check is not None:
        check(dict(opt, is_train=is_train, dist=False, num_gpu=1))
    for key, block in opt.items():
        if key.startswith('network_'):
            check_network_block(key, block)
    for phase, dataset in (opt.get('datasets') or {}).items():
        DATASET_REGISTRY.get(dataset['type'])
    train_set = (opt.get('datasets') or {}).get('train') or {}
    if is_train and str(train_set.get('type', '')).endswith('RealESRGANDataset'):
        assert training_gt_size(opt) > 0
        validate_degradation_opt(opt)


@pytest.mark.parametrize('path', _pipelines(), ids=lambda p: p.relative_to(OPTIONS).as_posix())
def test_a_shipped_pipeline_file_passes_the_checks_of_inference(path: Path):
    opt = LOADED[path]
    InferenceDefaults.from_dict(opt.get('inference'))
    DiffusionConfig.from_dict(opt.get('diffusion'))
    for name in PIPELINE_NETWORKS:
        check_network_block(f'network_{name}', opt[f'network_{name}'])


@pytest.mark.parametrize('path', _network_files(), ids=lambda p: p.relative_to(OPTIONS).as_posix())
def test_a_shipped_network_file_names_a_buildable_network(path: Path):
    opt = LOADED[path]
    check_network_block('network_g', opt['network_g'])
    assert (opt.get('path') or {}).get('pretrain_network_g'), f'{path}: path.pretrain_network_g names the weights'
