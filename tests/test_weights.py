"""The checkpoint loader: every official wrapper/prefix, safetensors, and clear errors on bad input."""
from __future__ import annotations

import pickle
from pathlib import Path
from collections import OrderedDict

import pytest
import torch
import yaml

from lpnsr_arch.archs.resshift_unet_arch import LPNSRResShiftUNet
from lpnsr_arch.archs.vqgan_arch import LPNSRVQAutoencoder
from lpnsr_arch.weights import CheckpointError, load_weights, read_state_dict, save_state_dict


@pytest.fixture
def unet(tiny_unet_kwargs):
    torch.manual_seed(0)
    return LPNSRResShiftUNet(**tiny_unet_kwargs)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize('wrap', ['flat', 'params_ema', 'params', 'state_dict', 'module', 'compiled_ddp', 'no_masks'])
def test_official_formats_load(tmp_path, unet, tiny_unet_kwargs, wrap):
    state = unet.state_dict()
    if wrap == 'module':
        state = OrderedDict(('module.' + k, v) for k, v in state.items())
        obj = {'state_dict': state, 'amp_scaler': None}
    elif wrap == 'compiled_ddp':
        obj = OrderedDict(('module._orig_mod.' + k, v) for k, v in state.items())
    elif wrap == 'no_masks':
        obj = {k: v for k, v in state.items() if not k.endswith(('attn_mask', 'relative_position_index'))}
    elif wrap == 'flat':
        obj = state
    else:
        obj = {wrap: state, 'other': {'x': torch.zeros(1)}} if wrap != 'params' else {'params': state}
    path = tmp_path / 'ckpt.pth'
    torch.save(obj, path)
    fresh = LPNSRResShiftUNet(**tiny_unet_kwargs)
    load_weights(fresh, path)
    assert _same_weights(fresh, unet)


def test_params_ema_preferred_over_params(tmp_path, unet, tiny_unet_kwargs):
    other = LPNSRResShiftUNet(**tiny_unet_kwargs)
    torch.save({'params': other.state_dict(), 'params_ema': unet.state_dict()}, tmp_path / 'b.pth')
    fresh = load_weights(LPNSRResShiftUNet(**tiny_unet_kwargs), tmp_path / 'b.pth')
    assert _same_weights(fresh, unet)
    fresh = load_weights(LPNSRResShiftUNet(**tiny_unet_kwargs), tmp_path / 'b.pth', param_key='params')
    assert _same_weights(fresh, other)


def test_safetensors_round_trip_is_atomic(tmp_path, unet, tiny_unet_kwargs):
    path = save_state_dict(tmp_path / 'w.safetensors', unet.state_dict())
    assert [p.name for p in tmp_path.iterdir()] == ['w.safetensors']  # no temp file left behind
    assert _same_weights(load_weights(LPNSRResShiftUNet(**tiny_unet_kwargs), path), unet)


def test_wrong_network_lists_missing_unexpected_and_shapes(tmp_path, unet, tiny_unet_kwargs, tiny_vq_kwargs):
    torch.save(LPNSRVQAutoencoder(**tiny_vq_kwargs).state_dict(), tmp_path / 'vq.pth')
    with pytest.raises(CheckpointError, match=r'(?s)vq\.pth does not fit LPNSRResShiftUNet.*missing keys.*unexpected'):
        load_weights(unet, tmp_path / 'vq.pth')
    wider = LPNSRResShiftUNet(**dict(tiny_unet_kwargs, model_channels=64))
    torch.save(wider.state_dict(), tmp_path / 'wide.pth')
    with pytest.raises(CheckpointError, match=r'wrong shapes .*input_blocks\.0\.0\.weight: checkpoint \(64'):
        load_weights(unet, tmp_path / 'wide.pth')


def test_truncated_file(tmp_path, unet):
    torch.save(unet.state_dict(), tmp_path / 'full.pth')
    data = (tmp_path / 'full.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 3])
    with pytest.raises(CheckpointError, match='cut.pth'):
        load_weights(unet, tmp_path / 'cut.pth')
    (tmp_path / 'cut.safetensors').write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":')
    with pytest.raises(CheckpointError, match='cut.safetensors'):
        read_state_dict(tmp_path / 'cut.safetensors')


class Payload:
    """An arbitrary object: weights_only loading must refuse to unpickle it."""

    def __reduce__(self):
        return (print, ('this must never run', ))


def test_pickled_objects_are_refused(tmp_path, unet):
    with open(tmp_path / 'evil.pth', 'wb') as handle:
        pickle.dump({'params': Payload()}, handle)
    with pytest.raises(CheckpointError, match='weights-only') as refused:
        read_state_dict(tmp_path / 'evil.pth')
    assert '\n' not in str(refused.value) and 'In PyTorch 2.6' not in str(refused.value)  # no advice paragraphs
    (tmp_path / 'notes.pth').write_text('a training log, not a checkpoint\n')
    with pytest.raises(CheckpointError, match=r'notes\.pth: cannot be loaded as a weights-only') as text:
        read_state_dict(tmp_path / 'notes.pth')
    assert '\n' not in str(text.value)
    torch.save({'params': {'a': 3}}, tmp_path / 'notensor.pth')
    with pytest.raises(CheckpointError, match="entry 'a' is a int, not a tensor"):
        read_state_dict(tmp_path / 'notensor.pth')
    torch.save([1, 2], tmp_path / 'list.pth')
    with pytest.raises(CheckpointError, match='expected a dict of tensors'):
        read_state_dict(tmp_path / 'list.pth')


def test_missing_file_and_param_key(tmp_path, unet):
    with pytest.raises(CheckpointError, match='not found'):
        read_state_dict(tmp_path / 'absent.pth')
    torch.save({'params': unet.state_dict()}, tmp_path / 'p.pth')
    with pytest.raises(CheckpointError, match="no entry 'params_ema'"):
        read_state_dict(tmp_path / 'p.pth', param_key='params_ema')


def test_a_checkpoint_of_another_shift_layout_is_refused(tmp_path, unet, tiny_unet_kwargs):
    # image_size decides which Swin blocks shift; the masks' values are rebuilt, but not which blocks have one
    other = LPNSRResShiftUNet(**dict(tiny_unet_kwargs, image_size=8, lq_size=8))  # 8 = window: no shift at level 0
    assert {k for k in other.state_dict() if k.endswith('attn_mask')} != \
        {k for k in unet.state_dict() if k.endswith('attn_mask')}
    path = tmp_path / 'unet16.safetensors'
    save_state_dict(path, unet.state_dict())
    with pytest.raises(CheckpointError, match=r'(?s)shifted Swin blocks differ.*shift masks'):
        load_weights(other, path)
    load_weights(LPNSRResShiftUNet(**tiny_unet_kwargs), path)  # the same layout loads


def test_errors_name_the_file_a_state_dict_came_from(tmp_path, unet, tiny_vq_kwargs):
    from lpnsr_arch.weights import load_pretrained
    path = tmp_path / 'wrong_net_g.pth'
    torch.save({'params_ema': LPNSRVQAutoencoder(**tiny_vq_kwargs).state_dict()}, path)
    with pytest.raises(CheckpointError, match=r'wrong_net_g\.pth does not fit LPNSRResShiftUNet'):
        load_pretrained(unet, path, param_key='params_ema')
    with pytest.raises(CheckpointError, match=r'weights\.bin \[unet\.\*\] does not fit'):
        load_weights(unet, torch.load(path)['params_ema'], source='weights.bin [unet.*]')


def test_upper_case_safetensors_suffix_and_non_strict_names_the_keys(tmp_path, unet, tiny_unet_kwargs, caplog):
    path = save_state_dict(tmp_path / 'w.SAFETENSORS', unet.state_dict())
    assert _same_weights(load_weights(LPNSRResShiftUNet(**tiny_unet_kwargs), path), unet)
    state = dict(unet.state_dict())
    dropped = sorted(state)[0]
    del state[dropped]
    state['extra.weight'] = torch.zeros(1)
    with caplog.at_level('WARNING'):
        load_weights(LPNSRResShiftUNet(**tiny_unet_kwargs), state, strict=False, source='partial.pth')
    assert 'partial.pth' in caplog.text and dropped in caplog.text and 'extra.weight' in caplog.text


def test_training_loads_refuse_a_misspelt_param_key(tmp_path, unet, tiny_unet_kwargs):
    """``param_key_*`` of a BasicSR checkpoint must name an entry (a typo used to load params_ema silently);
    params_ema falls back to params as in BasicSR; a flat file loads as it is."""
    from lpnsr_arch.weights import load_checkpoint_params
    ema = {k: torch.full_like(v, 1.0) for k, v in unet.state_dict().items()}
    plain = {k: torch.zeros_like(v) for k, v in unet.state_dict().items()}
    torch.save({'params': plain, 'params_ema': ema}, tmp_path / 'both.pth')
    with pytest.raises(CheckpointError, match=r"both\.pth: has no entry 'parms' \(param_key\); its weight entries are "
                                              r"\['params', 'params_ema'\]"):
        load_checkpoint_params(tmp_path / 'both.pth', 'parms')
    assert all(torch.equal(v, plain[k]) for k, v in load_checkpoint_params(tmp_path / 'both.pth', 'params').items())
    assert all(torch.equal(v, ema[k]) for k, v in load_checkpoint_params(tmp_path / 'both.pth', 'auto').items())
    torch.save({'params': plain}, tmp_path / 'no_ema.pth')
    assert all(torch.equal(v, plain[k]) for k, v in load_checkpoint_params(tmp_path / 'no_ema.pth',
                                                                           'params_ema').items())
    save_state_dict(tmp_path / 'flat.safetensors', ema)
    assert all(torch.equal(v, ema[k]) for k, v in load_checkpoint_params(tmp_path / 'flat.safetensors',
                                                                         'params_ema').items())


def test_inference_benchmarks_and_training_read_a_path_block_the_same_way(tmp_path, unet, tiny_unet_kwargs):
    """One loader for every options-driven load: a BasicSR checkpoint without ``params_ema`` loads ``params`` for
    ``param_key_*: params_ema`` in the inference pipeline and the benchmarks as in training (the first two used to
    refuse it), and a misspelt key is refused by all."""
    from lpnsr_arch.bench.common import _basicsr_network
    from lpnsr_arch.pipeline import _build_and_load
    from lpnsr_arch.weights import load_network_from_options
    plain = {k: torch.full_like(v, 0.5) for k, v in unet.state_dict().items()}
    torch.save({'params': plain}, tmp_path / 'net_g_10.pth')
    block = dict(tiny_unet_kwargs, type='LPNSRResShiftUNet')
    path_opt = {'pretrain_network_g': str(tmp_path / 'net_g_10.pth'), 'param_key_g': 'params_ema'}
    options = tmp_path / 'options.yml'
    options.write_text(yaml.safe_dump({'network_g': block, 'path': path_opt}))
    training = LPNSRResShiftUNet(**tiny_unet_kwargs)
    assert load_network_from_options(training, path_opt, 'g') == tmp_path / 'net_g_10.pth'
    pipeline_path_opt = {key.replace('_g', '_unet'): value for key, value in path_opt.items()}
    for net in (training, _basicsr_network(str(options), torch.device('cpu')),
                _build_and_load('unet', block, pipeline_path_opt)):
        assert all(torch.equal(net.state_dict()[k], v) for k, v in plain.items() if not k.endswith('attn_mask'))
    assert load_network_from_options(training, {}, 'g') is None
    with pytest.raises(CheckpointError, match=r"has no entry 'parms_ema' \(param_key\)"):
        load_network_from_options(training, dict(path_opt, param_key_g='parms_ema'), 'g')
    with pytest.raises(CheckpointError, match=r"has no entry 'parms_ema' \(param_key\)"):
        _build_and_load('unet', block, dict(pipeline_path_opt, param_key_unet='parms_ema'))


def test_project_files_are_found_from_any_folder_and_in_a_plain_install(tmp_path, monkeypatch):
    """Relative options and checkpoint paths: the current folder, then the repository checkout, then a plain
    install's data (``setup.py``'s ``data_files``); with neither, the error says so and names every place."""
    import lpnsr_arch.weights as weights
    from lpnsr_arch.pipeline import load_options
    demo_options = 'options/demo/inference_lpnsr_demo.yml'
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert weights.resolve_project_file(demo_options, 'x') == weights.REPO_ROOT / demo_options
    assert load_options(demo_options)['name'] == 'LPNSR_demo_x4'
    assert weights.default_run_root() == weights.REPO_ROOT
    (elsewhere / 'options' / 'demo').mkdir(parents=True)
    (elsewhere / demo_options).write_text('name: mine\n')
    assert load_options(demo_options)['name'] == 'mine', 'the current folder comes first'

    site_packages, share = tmp_path / 'site-packages', tmp_path / 'share' / 'lpnsr_arch'
    (site_packages / 'lpnsr_arch').mkdir(parents=True)  # a plain install: the package without setup.py
    monkeypatch.setattr(weights, 'REPO_ROOT', site_packages)
    monkeypatch.setattr(weights, 'INSTALLED_DATA', share)
    assert not weights.is_checkout() and weights.default_run_root() == Path.cwd()
    with pytest.raises(FileNotFoundError, match=r'options file options/x.yml does not exist \(looked in the current '
                                                r'folder .*elsewhere; .*site-packages is not the repository and no '
                                                r'installed data was found at .*share/lpnsr_arch: install with `pip '
                                                r'install -e .` from a clone, or give the full path\)$'):
        load_options('options/x.yml')
    with pytest.raises(FileNotFoundError, match=r'^x.yml does not exist \(.*site-packages is not the repository and '
                                                r'no installed data was found at .*lpnsr_arch: install with `pip '
                                                r'install -e .` from a clone\)$'):
        weights.resolve_project_file('x.yml', 'x.yml', current_folder=False)  # the demo's and presets' own files
    with pytest.raises(FileNotFoundError, match=r'options file ~nosuchuser_lpnsr/x.yml does not exist'):
        load_options('~nosuchuser_lpnsr/x.yml')  # an unknown ~user is a path like any other, not a traceback
    (share / 'options').mkdir(parents=True)
    (share / 'options' / 'x.yml').write_text('name: installed\n')
    assert load_options('options/x.yml')['name'] == 'installed'
    with pytest.raises(FileNotFoundError, match=r'path.pretrain_network_g = w.pth does not exist \(looked in the '
                                                r'current folder .*elsewhere, the installed data .*lpnsr_arch\)$'):
        weights.resolve_checkpoint('pretrain_network_g', 'w.pth')
    with pytest.raises(FileNotFoundError, match=r'options file options is not a file'):
        load_options('options')
