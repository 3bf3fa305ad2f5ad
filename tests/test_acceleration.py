"""The launch-saving wrappers (CPU side: what is captured, what runs eagerly; replay itself is checked on a GPU by
scripts/gpu_smoke.py)."""
import logging

import pytest
import torch

import lpnsr_arch  # noqa: F401
from lpnsr_arch.acceleration import CapturedGraphs, call_signature
from lpnsr_arch.bench.presets import tiny_options
from lpnsr_arch.pipeline import LPNSRPipeline


def test_calls_off_cuda_or_with_gradients_are_not_captured():
    x = torch.randn(1, 3, 4, 4)
    assert call_signature((x, ), {}) is None  # a CPU tensor
    meta = torch.empty(1, 3, 4, 4, device='meta')
    assert call_signature((meta, ), {'mode': 'dist'}) is None
    net = torch.nn.Conv2d(3, 3, 1)
    wrapped = CapturedGraphs(net)
    torch.testing.assert_close(wrapped(x), net(x), rtol=0, atol=0)
    assert wrapped._graphs == {}  # nothing captured on the CPU
    with torch.no_grad():  # each reason on its own, with gradients off
        assert call_signature((x, ), {}) is None, 'a CPU tensor'
        assert call_signature((meta, ), {}) is None, 'a meta tensor'
        torch.testing.assert_close(wrapped(x), net(x), rtol=0, atol=0)
        assert wrapped._graphs == {}


def test_a_tensor_that_needs_gradients_is_not_captured(monkeypatch):
    """Even with gradients off and every tensor on CUDA (faked: the signature reads metadata only), a tensor that
    requires gradients is refused, and so is a call made with gradients on."""
    monkeypatch.setattr(torch.Tensor, 'device', property(lambda self: torch.device('cuda', 0)))
    monkeypatch.setattr(torch, 'is_autocast_enabled', lambda device_type: False)
    x, leaf = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4, requires_grad=True)
    with torch.no_grad():
        assert call_signature((x, ), {}) is not None, 'the control: a plain CUDA call is captured'
        assert call_signature((x, leaf), {}) is None
    assert call_signature((x, ), {}) is None, 'gradients on'


def test_the_signature_separates_what_a_graph_is_specific_to(monkeypatch):
    """Shapes, memory formats, dtypes, other argument values and the autocast state each give another graph;
    equal calls give the same key. (Tensors are made to look like CUDA ones: the key reads only their metadata.)"""
    monkeypatch.setattr(torch.Tensor, 'device', property(lambda self: torch.device('cuda', 0)))
    autocast = {'enabled': False}  # this CPU-only torch disables CUDA autocast: its state is set here instead
    monkeypatch.setattr(torch, 'is_autocast_enabled', lambda device_type: autocast['enabled'])
    monkeypatch.setattr(torch, 'get_autocast_dtype', lambda device_type: torch.float16)
    a = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        key = call_signature((a, ), {'mode': 'dist'})
        assert key == call_signature((torch.randn(2, 3, 8, 8), ), {'mode': 'dist'})
        others = [
            call_signature((torch.randn(1, 3, 8, 8), ), {'mode': 'dist'}),
            call_signature((a.contiguous(memory_format=torch.channels_last), ), {'mode': 'dist'}),
            call_signature((a.half(), ), {'mode': 'dist'}),
            call_signature((a, ), {'mode': 'sample'}),
            call_signature((a, ), {}),
        ]
        autocast['enabled'] = True
        others.append(call_signature((a, ), {'mode': 'dist'}))
        autocast['enabled'] = False
        assert call_signature((a, ), {'generator': torch.Generator()}) is None  # its draws would be frozen
    assert None not in others and len({key, *others}) == len(others) + 1
    assert call_signature((a, ), {'mode': 'dist'}) is None  # gradients on: training runs eagerly


def test_cuda_graphs_switch_off_the_autocast_cache_and_exclude_compile():
    pipeline = LPNSRPipeline.from_options(tiny_options())
    with pytest.raises(ValueError, match='exclude each other'):
        pipeline.accelerate(cuda_graphs=True, compile_mode='default')
    assert pipeline.autocast_cache and not isinstance(pipeline.denoiser, CapturedGraphs)  # refused before changes
    lr = torch.rand(1, 3, 16, 16)
    reference = pipeline(lr, seed=1, tile=0)
    pipeline.accelerate(cuda_graphs=True, compile_scope='all')
    assert not pipeline.autocast_cache
    wrapped = [name for owner, name in pipeline.compile_targets('all')
               if isinstance(getattr(owner, name), CapturedGraphs)]
    assert wrapped == ['denoiser', 'noise_predictor', 'upsampler']  # the pixel autoencoder has no encoder/decoder
    assert not pipeline.precision_context(torch.device('cpu'), 'bf16')._cache_enabled
    torch.testing.assert_close(pipeline(lr, seed=1, tile=0), reference, rtol=0, atol=0)  # CPU: eager, unchanged


def test_graphs_are_kept_per_signature_up_to_a_bound(monkeypatch, caplog):
    """One capture per signature, reused after; the least recently used goes past ``max_graphs``; a capture that
    fails leaves that signature eager. (Capture and replay are replaced: they need a GPU.)"""
    import lpnsr_arch.acceleration as acceleration
    captured = []

    class FakeGraph:
        def __init__(self, module, args, kwargs, warmup, device):
            if args[0].shape[0] == 3:
                try:
                    raise RuntimeError('operation not permitted when stream is capturing\ndetails')
                except RuntimeError:
                    raise RuntimeError('operation failed due to a previous error during capture\nmore')
            captured.append(args[0].shape[0])

        def __call__(self, args, kwargs):
            return ('replayed', args[0].shape[0])

    monkeypatch.setattr(acceleration, '_Graph', FakeGraph)
    monkeypatch.setattr(acceleration, 'call_signature', lambda args, kwargs: args[0].shape[0])
    wrapped = CapturedGraphs(torch.nn.Identity(), max_graphs=2)
    assert wrapped(torch.zeros(1)) == ('replayed', 1) and wrapped(torch.zeros(1)) == ('replayed', 1)
    wrapped(torch.zeros(2))
    wrapped(torch.zeros(1))  # 1 is now the most recent: 2 goes first
    wrapped(torch.zeros(4))
    assert captured == [1, 2, 4] and list(wrapped._graphs) == [1, 4]
    with caplog.at_level(logging.WARNING, logger='basicsr'):
        out = wrapped(torch.ones(3))
    assert torch.equal(out, torch.ones(3)) and wrapped._graphs[3] is None  # eager after the failed capture
    assert ('failed, running it eagerly at this size: operation failed due to a previous error during capture '
            '(after: operation not permitted when stream is capturing)') in caplog.text
    wrapped(torch.ones(3))
    assert captured == [1, 2, 4]  # not tried again while it is kept


def test_accelerating_twice_is_refused():
    pipeline = LPNSRPipeline.from_options(tiny_options()).accelerate(cuda_graphs=True)
    with pytest.raises(ValueError, match=r"\['denoiser', 'noise_predictor'\] already compiled or replayed"):
        pipeline.accelerate(cuda_graphs=True)
    assert not isinstance(pipeline.denoiser.module, CapturedGraphs)  # not wrapped twice
    pipeline.accelerate(channels_last=True)  # a memory format alone changes no wrapper: allowed


def test_shift_masks_are_built_inside_a_capture_not_taken_from_the_cache(monkeypatch):
    """A graph must not hold the address of a cached mask (a later eviction frees it): during a capture the masks
    are built afresh (inside the graph); otherwise they come from the cache."""
    from lpnsr_arch.archs import swin, upsampler_arch
    cached = swin.official_shift_mask(16, 16, 8, 4, torch.device('cpu'), torch.float32)
    assert swin.official_shift_mask(16, 16, 8, 4, torch.device('cpu'), torch.float32) is cached
    cached_swinir = upsampler_arch.swinir_shift_mask(16, 16, 8, 4, torch.device('cpu'))
    assert upsampler_arch.swinir_shift_mask(16, 16, 8, 4, torch.device('cpu')) is cached_swinir
    assert not swin.capturing_cuda_graph(torch.device('cpu'))
    monkeypatch.setattr(swin, 'capturing_cuda_graph', lambda device: True)
    monkeypatch.setattr(upsampler_arch, 'capturing_cuda_graph', lambda device: True)
    fresh = swin.official_shift_mask(16, 16, 8, 4, torch.device('cpu'), torch.float32)
    assert fresh is not cached and torch.equal(fresh, cached)
    fresh_swinir = upsampler_arch.swinir_shift_mask(16, 16, 8, 4, torch.device('cpu'))
    assert fresh_swinir is not cached_swinir and torch.equal(fresh_swinir, cached_swinir)
