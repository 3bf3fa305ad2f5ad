"""The conformance checker: the official vectors (when ../shared is here) and vectors this project writes itself."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from lpnsr_arch import conformance
from lpnsr_arch.weights import CheckpointError
from conftest import SMALL_DIFFUSION, TINY_UNET, TINY_VQ

OFFICIAL = 'conformance/lpnsr_small_a.safetensors'


def test_official_vectors_within_tolerance(shared_dir, tmp_path):
    assert conformance.main([str(shared_dir / OFFICIAL), '--json', str(tmp_path / 'r.json')]) == 0
    results = [conformance.CaseResult(r['name'], r['max_abs_error'], r['tolerance'])
               for r in json.loads((tmp_path / 'r.json').read_text())]
    names = {r.name for r in results}
    assert {'unet.s1', 'unet.s2', 'noise_predictor.s1.mean', 'noise_predictor.s2.logvar', 'vq.encode',
            'vq.decode_quantized', 'vq.decode_unquantized', 'chain.sr_before_color', 'chain.sr_final'} <= names
    failing = [(r.name, r.max_abs_error) for r in results if not r.passed]
    assert failing == []
    assert max(r.max_abs_error for r in results if not r.name.startswith('chain')) <= 1e-4


def _config(seed_shift: int = 0) -> dict:
    unet = dict(TINY_UNET, num_res_blocks=[1, 1], attention_resolutions=[16, 8], channel_mult=[1, 2])
    return {'unet': unet, 'noise_predictor': dict(unet, double_z=True, num_heads=-1),
            'vq': copy.deepcopy(TINY_VQ), 'diffusion': dict(SMALL_DIFFUSION, kappa=2.0 + seed_shift)}


def test_checker_passes_on_self_written_vectors_with_other_configs(tmp_path):
    path = conformance.write_vectors(tmp_path / 'own.safetensors', _config(), seed=3)
    results = conformance.check_file(path)
    assert len(results) >= 15 and all(r.passed for r in results)
    assert max(r.max_abs_error for r in results) < 1e-5


def test_checker_fails_on_a_wrong_output(tmp_path):
    path = conformance.write_vectors(tmp_path / 'own.safetensors', _config(1), seed=5)
    tensors = load_file(str(path))
    from safetensors import safe_open
    with safe_open(str(path), 'pt') as handle:
        metadata = handle.metadata()
    tensors['case.unet.s2.out'] = tensors['case.unet.s2.out'] + 1e-3
    bad = tmp_path / 'bad.safetensors'
    save_file(tensors, str(bad), metadata=metadata)
    assert conformance.main([str(bad)]) == 1
    failing = [r.name for r in conformance.check_file(bad) if not r.passed]
    assert failing == ['unet.s2']


def test_checker_reports_bad_files(tmp_path, caplog):
    save_file({'x': torch.zeros(1)}, str(tmp_path / 'nometa.safetensors'))
    with pytest.raises(KeyError, match='nometa.safetensors: the metadata has no "config" entry'):
        conformance.check_file(tmp_path / 'nometa.safetensors')
    assert conformance.main([str(tmp_path / 'nometa.safetensors')]) == 2
    errors = [record.getMessage() for record in caplog.records if record.levelname == 'ERROR']
    assert errors[-1].startswith(str(tmp_path / 'nometa.safetensors'))  # one line, without a KeyError's quotes
    (tmp_path / 'junk.safetensors').write_bytes(b'not a file')
    with pytest.raises(CheckpointError, match='junk.safetensors'):
        conformance.check_file(tmp_path / 'junk.safetensors')


def test_checker_names_the_file_in_weight_config_and_empty_errors(tmp_path):
    good = conformance.write_vectors(tmp_path / "good.safetensors", _config(), seed=1)
    from safetensors import safe_open
    with safe_open(str(good), 'pt') as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    weights_only = {k: v for k, v in tensors.items() if not k.startswith(('case.', 'schedule.'))}
    save_file(weights_only, str(tmp_path / 'nocases.safetensors'), metadata=metadata)
    with pytest.raises(ValueError, match=r'nocases\.safetensors: holds no comparison cases'):
        conformance.check_file(tmp_path / 'nocases.safetensors')
    assert conformance.main([str(tmp_path / 'nocases.safetensors')]) == 2
    broken = {k: v for k, v in tensors.items() if k != sorted(k for k in tensors if k.startswith('unet.'))[0]}
    save_file(broken, str(tmp_path / 'missing.safetensors'), metadata=metadata)
    with pytest.raises(CheckpointError, match=r'missing\.safetensors \[unet\.\*\] does not fit'):
        conformance.check_file(tmp_path / 'missing.safetensors')
    config = json.loads(metadata['config'])
    config['unet']['not_an_argument'] = 1
    save_file(tensors, str(tmp_path / 'badcfg.safetensors'), metadata={**metadata, 'config': json.dumps(config)})
    with pytest.raises(ValueError, match=r"badcfg\.safetensors: config section 'unet' does not build"):
        conformance.check_file(tmp_path / 'badcfg.safetensors')
