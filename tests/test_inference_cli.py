"""The ``lpnsr`` command line (lpnsr_arch/inference.py) and image I/O (lpnsr_arch/imageio.py)."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import lpnsr_arch  # noqa: F401
from lpnsr_arch.bench.presets import tiny_options
from lpnsr_arch.imageio import ImageReadError, read_image, restore_mode, write_image
from lpnsr_arch.inference import main, output_path_for


@pytest.fixture(scope='module')
def options_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('opt') / 'tiny.yml'
    path.write_text(yaml.safe_dump(tiny_options()))
    return path


def _write(path: Path, array: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), array)
    return path


def _inputs(folder: Path) -> dict:
    rng = np.random.default_rng(0)
    folder.mkdir()
    return {
        'rgb': _write(folder / 'rgb.png', rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)),
        'grey': _write(folder / 'grey.png', rng.integers(0, 256, (12, 16), dtype=np.uint8)),
        'rgba': _write(folder / 'rgba.png', rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)),
        'deep': _write(folder / 'deep.png', rng.integers(0, 65536, (16, 16, 3), dtype=np.uint16)),
    }


def _run(options_file: Path, *args: str) -> int:
    return main(['--opt', str(options_file), '--device', 'cpu', '--quiet', '--seed', '1', *args])


def test_folder_with_modes_and_a_corrupt_file(options_file, tmp_path, caplog):
    inputs = _inputs(tmp_path / 'in')
    (tmp_path / 'in' / 'broken.png').write_bytes(b'not a png at all')
    (tmp_path / 'in' / 'notes.txt').write_text('ignored')
    before = {p.name: p.read_bytes() for p in (tmp_path / 'in').iterdir()}
    assert _run(options_file, '-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out')) == 0
    out = tmp_path / 'out'
    assert sorted(p.name for p in out.iterdir()) == ['deep_out.png', 'grey_out.png', 'rgb_out.png', 'rgba_out.png']
    rgb = cv2.imread(str(out / 'rgb_out.png'), cv2.IMREAD_UNCHANGED)
    assert rgb.shape == (64, 80, 3) and rgb.dtype == np.uint8
    grey = cv2.imread(str(out / 'grey_out.png'), cv2.IMREAD_UNCHANGED)
    assert grey.shape == (48, 64)
    rgba = cv2.imread(str(out / 'rgba_out.png'), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (64, 64, 4)
    source_alpha = torch.from_numpy(cv2.imread(str(inputs['rgba']), cv2.IMREAD_UNCHANGED)[:, :, 3] / 255.0)
    expected_alpha = torch.nn.functional.interpolate(source_alpha[None, None], scale_factor=4, mode='bicubic',
                                                     align_corners=False).clamp(0, 1)[0, 0].mul(255).round()
    assert np.abs(rgba[:, :, 3].astype(float) - expected_alpha.numpy()).max() <= 1  # alpha: the bicubic x4 of the LR's
    deep = cv2.imread(str(out / 'deep_out.png'), cv2.IMREAD_UNCHANGED)
    assert deep.shape == (64, 64, 3) and deep.dtype == np.uint16
    assert {p.name: p.read_bytes() for p in (tmp_path / 'in').iterdir()} == before
    assert any('broken.png' in record.getMessage() for record in caplog.records if record.levelname == 'ERROR')


def test_all_inputs_failing_gives_a_non_zero_exit(options_file, tmp_path):
    (tmp_path / 'bad.png').write_bytes(b'')
    assert _run(options_file, '-i', str(tmp_path / 'bad.png'), '-o', str(tmp_path / 'out')) == 1
    assert _run(options_file, '-i', str(tmp_path / 'nowhere'), '-o', str(tmp_path / 'out')) == 2


def test_a_bad_checkpoint_is_a_clean_error_that_names_the_file(options_file, tmp_path, caplog):
    _inputs(tmp_path / 'in')
    cut = tmp_path / 'cut.safetensors'
    cut.write_bytes(b'\x08\x00\x00\x00')  # a truncated header
    options = yaml.safe_load(options_file.read_text())
    options.setdefault('path', {})['pretrain_network_unet'] = str(cut)
    bad_options = tmp_path / 'bad.yml'
    bad_options.write_text(yaml.safe_dump(options))
    assert _run(bad_options, '-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out')) == 2
    assert 'cut.safetensors: not a readable safetensors file' in caplog.text
    assert not (tmp_path / 'out').exists() or not any((tmp_path / 'out').iterdir())


def test_tile_given_alone_takes_an_overlap_that_fits(options_file, tmp_path, caplog):
    # the tiny options have tile 32 / overlap 16: --tile 16 alone used to fail every image (overlap 16 >= tile)
    _inputs(tmp_path / 'in')
    assert _run(options_file, '-i', str(tmp_path / 'in' / 'rgb.png'), '-o', str(tmp_path / 'out'), '--tile', '16') == 0
    code = _run(options_file, '-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out2'), '--tile', '16',
                '--tile-overlap', '16')
    assert code == 2 and 'tile_overlap must be in [0, tile), got 16' in caplog.text
    assert not (tmp_path / 'out2').exists()  # refused before any image


def test_two_inputs_with_one_output_name_do_not_overwrite_each_other(options_file, tmp_path, caplog):
    inputs = _inputs(tmp_path / 'in')
    _write(tmp_path / 'in' / 'rgb.jpg', cv2.imread(str(inputs['rgb'])))
    assert _run(options_file, '-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out'), '--ext', 'png') == 0
    assert 'rgb.png: the output' in caplog.text and 'was already written from' in caplog.text  # the later one skipped
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['deep_out.png', 'grey_out.png', 'rgb_out.png',
                                                                     'rgba_out.png']


def test_a_rerun_into_the_same_folder_says_which_files_it_replaced(options_file, tmp_path, caplog):
    inputs = _inputs(tmp_path / 'in')
    out = tmp_path / 'out'
    assert _run(options_file, '-i', str(inputs['rgb']), '-o', str(out)) == 0
    assert 'replaced files' not in caplog.text  # a new output replaces nothing
    _write(out / 'grey_out.png', np.zeros((4, 4), np.uint8))  # an earlier file of the name the grey input will take
    assert _run(options_file, '-i', str(tmp_path / 'in'), '-o', str(out)) == 0
    assert ('2 of the written files replaced files of the same name that were already in '
            f'{out}: grey_out.png, rgb_out.png') in caplog.text
    assert read_image(out / 'grey_out.png')[0].shape[-2:] == (48, 64)  # this run's output


def test_set_up_errors_exit_2_without_a_traceback(options_file, tmp_path, caplog):
    _inputs(tmp_path / 'in')
    options = yaml.safe_load(options_file.read_text())
    options['path'] = None  # an empty `path:` block
    empty_path = tmp_path / 'empty_path.yml'
    empty_path.write_text(yaml.safe_dump(options))
    out = tmp_path / 'out'
    assert _run(empty_path, '-i', str(tmp_path / 'in' / 'rgb.png'), '-o', str(out), '--upsampler', 'bicubic') == 0
    options['network_unet']['no_such_argument'] = 1
    typo = tmp_path / 'typo.yml'
    typo.write_text(yaml.safe_dump(options))
    assert _run(typo, '-i', str(tmp_path / 'in'), '-o', str(out)) == 2
    assert 'no_such_argument' in caplog.text
    if not torch.cuda.is_available():
        assert main(['--opt', str(options_file), '-i', str(tmp_path / 'in'), '-o', str(out), '--device', 'cuda']) == 2
        assert '--device cuda: cuda is not available here' in caplog.text


def test_an_input_is_never_overwritten(options_file, tmp_path, caplog):
    inputs = _inputs(tmp_path / 'in')
    original = inputs['rgb'].read_bytes()
    code = _run(options_file, '-i', str(inputs['rgb']), '-o', str(tmp_path / 'in'), '--suffix', '')
    assert code == 1
    assert 'would overwrite an input' in caplog.text
    assert inputs['rgb'].read_bytes() == original


def test_jpeg_output_and_its_exceptions(tmp_path):
    assert output_path_for(Path('a/x.png'), tmp_path, suffix='out', ext='jpg', mode='RGB',
                           bit_depth=8) == tmp_path / 'x_out.jpg'
    assert output_path_for(Path('x.png'), tmp_path, suffix='out', ext='jpg', mode='RGBA', bit_depth=8).suffix == '.png'
    assert output_path_for(Path('x.png'), tmp_path, suffix='', ext='jpg', mode='RGB',
                           bit_depth=16) == tmp_path / 'x.png'


def test_image_io_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    deep = rng.integers(0, 65536, (5, 7, 4), dtype=np.uint16)
    _write(tmp_path / 'deep.png', deep)
    image, record = read_image(tmp_path / 'deep.png')
    assert image.shape == (1, 3, 5, 7) and record.mode == 'RGBA' and record.bit_depth == 16
    assert float(image[0, 0, 0, 0]) == pytest.approx(deep[0, 0, 2] / 65535)  # BGR file, RGB tensor
    write_image(tmp_path / 'copy.png', restore_mode(image, record, scale=1), bit_depth=16)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / 'copy.png'), cv2.IMREAD_UNCHANGED), deep)
    with pytest.raises(ImageReadError, match='no such file'):
        read_image(tmp_path / 'missing.png')
    (tmp_path / 'fake.jpg').write_bytes(b'\xff\xd8 broken')
    with pytest.raises(ImageReadError, match='fake.jpg'):
        read_image(tmp_path / 'fake.jpg')
    with pytest.raises(ValueError, match='JPEG'):
        write_image(tmp_path / 'x.jpg', restore_mode(image, record, scale=1))


def test_a_grey_alpha_png_stays_grey_with_its_alpha(tmp_path):
    """OpenCV decodes a grey + alpha PNG as BGRA: it used to go through as colour (and come out tinted RGBA)."""
    from PIL import Image
    rng = np.random.default_rng(3)
    grey, alpha = rng.integers(0, 256, (6, 5), dtype=np.uint8), rng.integers(0, 256, (6, 5), dtype=np.uint8)
    Image.fromarray(np.stack([grey, alpha], axis=-1)).save(tmp_path / 'la.png')
    image, record = read_image(tmp_path / 'la.png')
    assert record.mode == 'LA' and record.bit_depth == 8
    assert torch.equal(image[:, 0], image[:, 1]) and torch.equal(image[:, 1], image[:, 2])
    np.testing.assert_allclose(image[0, 0].numpy(), grey / 255.0, atol=1e-6)
    tinted = image.clone()
    tinted[:, 0] += 0.02  # a colour cast from the network: the grey output is the channel mean
    restored = restore_mode(tinted.clamp(0, 1), record, scale=1)
    assert restored.shape == (1, 2, 6, 5)
    write_image(tmp_path / 'new' / 'out.png', restored)  # parent folders are created on this path too
    with Image.open(tmp_path / 'new' / 'out.png') as written:
        assert written.mode == 'LA'
        np.testing.assert_array_equal(np.asarray(written)[:, :, 1], alpha)
    write_image(tmp_path / 'out16.png', restored, bit_depth=16)  # 16 bits: RGBA with equal colour channels
    deep = cv2.imread(str(tmp_path / 'out16.png'), cv2.IMREAD_UNCHANGED)
    assert deep.shape == (6, 5, 4) and (deep[:, :, 0] == deep[:, :, 2]).all()
    assert output_path_for(Path('la.png'), tmp_path, suffix='out', ext='jpg', mode='LA', bit_depth=8).suffix == '.png'
    rgba = np.dstack([rng.integers(0, 256, (6, 5, 3), dtype=np.uint8), alpha])
    cv2.imwrite(str(tmp_path / 'rgba.png'), rgba)
    assert read_image(tmp_path / 'rgba.png')[1].mode == 'RGBA'


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_is_applied_like_opencv(tmp_path, orientation):
    from PIL import Image
    rng = np.random.default_rng(orientation)
    pixels = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    pixels[:3] = 0  # make every orientation distinguishable after JPEG coding
    exif = Image.new('RGB', (1, 1)).getexif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(tmp_path / 'photo.jpg', exif=exif.tobytes(), quality=100)
    image, _ = read_image(tmp_path / 'photo.jpg')
    expected = cv2.imread(str(tmp_path / 'photo.jpg'), cv2.IMREAD_COLOR)[:, :, ::-1]  # applies the tag
    assert image.shape[2:] == expected.shape[:2]
    np.testing.assert_allclose(image[0].permute(1, 2, 0).numpy(), expected / 255.0, atol=1e-6)


def test_sixteen_bit_and_alpha_writes_refuse_formats_that_cannot_hold_them(tmp_path):
    grey16 = torch.full((1, 3, 4, 4), 0.25)
    for name in ('x.bmp', 'x.webp', 'x.jpg'):
        with pytest.raises(ValueError, match=rf'{name}: .*16-bit'):
            write_image(tmp_path / name, grey16, bit_depth=16)
        assert not (tmp_path / name).exists()
    write_image(tmp_path / 'x.tif', grey16, bit_depth=16)
    assert cv2.imread(str(tmp_path / 'x.tif'), cv2.IMREAD_UNCHANGED)[0, 0, 0] == round(0.25 * 65535)
    with pytest.raises(ValueError, match=r'x\.ppm: OpenCV could not encode'):
        write_image(tmp_path / 'x.ppm', torch.full((1, 4, 4, 4), 0.5))
    with pytest.raises(ValueError, match=r"x\.xyz: OpenCV cannot encode a 3-channel 8-bit image as '\.xyz'"):
        write_image(tmp_path / 'x.xyz', grey16)


def test_an_output_path_that_is_a_file_and_a_bad_tile_batch_are_one_line_errors(options_file, tmp_path, caplog):
    _inputs(tmp_path / 'in')
    (tmp_path / 'taken').write_text('keep me')
    assert _run(options_file, '-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'taken')) == 2
    assert "-o/--output '" in caplog.text and 'is an existing file, not a folder' in caplog.text
    assert (tmp_path / 'taken').read_text() == 'keep me'
    assert _run(options_file, '-i', str(tmp_path / 'in'), '--tile-batch', '0') == 2


def test_an_output_folder_that_refuses_files_is_refused_before_any_image(options_file, tmp_path, caplog,
                                                                         monkeypatch):
    """A read-only (or immutable) existing folder used to be found only when the first result was written, after
    the whole chain had run for every image (exit 1). Root ignores permissions here, so the refusal is emulated."""
    import tempfile

    import lpnsr_arch.cli_errors as cli_errors
    _inputs(tmp_path / 'in')
    locked = tmp_path / 'locked'
    locked.mkdir()
    temporary_file = tempfile.TemporaryFile

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == locked:
            raise PermissionError(13, 'Permission denied')
        return temporary_file(*args, dir=dir, **kwargs)

    monkeypatch.setattr(cli_errors.tempfile, 'TemporaryFile', refuse)
    monkeypatch.setattr('lpnsr_arch.inference.process_files', lambda *a: pytest.fail('ran the images'))
    assert _run(options_file, '-i', str(tmp_path / 'in'), '-o', str(locked)) == 2
    assert f"-o/--output '{locked}': cannot write into the folder (Permission denied)" in caplog.text


@pytest.mark.parametrize('orientation', [3, 6])
def test_tiff_orientation_is_applied_once(tmp_path, orientation):
    tifffile = pytest.importorskip('tifffile')
    pixels = np.random.default_rng(orientation).integers(0, 65536, (6, 10, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / 'scan.tif', pixels, photometric='rgb', extratags=[(274, 'H', 1, orientation, True)])
    image, record = read_image(tmp_path / 'scan.tif')
    upright = np.rot90(pixels, k=-1) if orientation == 6 else pixels[::-1, ::-1]
    assert record.bit_depth == 16
    np.testing.assert_allclose(image[0].permute(1, 2, 0).numpy(), upright / 65535.0, atol=1e-6)


def test_a_huge_image_header_does_not_stop_the_orientation_lookup(tmp_path):
    import zlib

    from PIL import Image
    from lpnsr_arch.imageio import exif_orientation
    path = tmp_path / 'huge.png'
    Image.new('L', (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = (20000).to_bytes(4, 'big') * 2  # IHDR width and height: 400 MP, above PIL's bomb limit
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, 'big')  # the IHDR chunk's CRC
    path.write_bytes(bytes(data))
    assert exif_orientation(path) == 1


@pytest.mark.parametrize('bad', [{'color_fix': 'Wavelet'}, {'tile_batch': 0}, {'noise': 'learnt'}])
def test_a_bad_inference_value_in_the_options_is_one_error_before_any_image(options_file, tmp_path, caplog, bad):
    _inputs(tmp_path / 'in')
    options = yaml.safe_load(options_file.read_text())
    options['inference'] = dict(options['inference'], **bad)
    path = tmp_path / 'bad.yml'
    path.write_text(yaml.safe_dump(options))
    assert _run(path, '-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out')) == 2
    errors = [record.getMessage() for record in caplog.records if record.levelname == 'ERROR']
    assert len(errors) == 1 and str(path) in errors[0] and next(iter(bad)) in errors[0]
    assert not (tmp_path / 'out').exists() or not any((tmp_path / 'out').iterdir())


def test_a_tile_the_networks_cannot_take_blames_the_argument(options_file, tmp_path, caplog):
    _inputs(tmp_path / 'in')
    assert _run(options_file, '-i', str(tmp_path / 'in'), '-o', str(tmp_path / 'out'), '--tile', '8') == 2
    errors = [record.getMessage() for record in caplog.records if record.levelname == 'ERROR']
    assert errors == ['--tile 8: tile must be a multiple of 16, got 8']


def test_cuda_graphs_need_a_cuda_device_and_no_compile(options_file, tmp_path, caplog):
    inputs = _inputs(tmp_path / 'in')
    out = tmp_path / 'out'
    assert _run(options_file, '-i', str(inputs['rgb']), '-o', str(out), '--cuda-graphs') == 2
    assert '--cuda-graphs: needs a CUDA device; --device cpu gives cpu' in caplog.text
    assert _run(options_file, '-i', str(inputs['rgb']), '-o', str(out), '--compile-scope', 'all') == 2
    assert '--compile-scope: has no effect: neither --compile nor CUDA graphs are on' in caplog.text
    assert not out.exists()  # refused before anything is written


@pytest.mark.parametrize('device, flags, expected', [
    ('cuda', [], {'cuda_graphs': True, 'compile_mode': None, 'compile_scope': 'all'}),
    ('cuda', ['--compile', 'default'], {'cuda_graphs': False, 'compile_mode': 'default', 'compile_scope': 'diffusion'}),
    ('cuda', ['--no-cuda-graphs'], {'cuda_graphs': False, 'compile_mode': None, 'compile_scope': 'diffusion'}),
    ('cuda', ['--compile-scope', 'diffusion'], {'cuda_graphs': True, 'compile_mode': None,
                                                'compile_scope': 'diffusion'}),
    ('cpu', [], {'cuda_graphs': False, 'compile_mode': None, 'compile_scope': 'diffusion'}),
    ('cuda', ['--cuda-graphs', '--compile', 'default'], '--cuda-graphs: not with --compile default: choose one'),
])
def test_the_fast_path_defaults_per_device(options_file, tmp_path, caplog, monkeypatch, device, flags, expected):
    """CUDA graphs of every network by default on a CUDA device, nothing on the CPU; --compile switches the graphs
    off and covers the diffusion networks. (The device and the pipeline are stand-ins: no GPU here.)"""
    import lpnsr_arch.inference as inference
    asked = {}

    class Stop(ValueError):
        pass

    class FakePipeline:
        def accelerate(self, **kwargs):
            asked.update(kwargs)
            raise Stop('stopped after accelerate')

    monkeypatch.setattr(inference, 'resolve_device', lambda name: torch.device(device))
    monkeypatch.setattr(inference, 'build_pipeline', lambda *args: FakePipeline())
    inputs = _inputs(tmp_path / 'in')
    assert main(['--opt', str(options_file), '-i', str(inputs['rgb']), '-o', str(tmp_path / 'out'), *flags]) == 2
    if isinstance(expected, str):
        assert expected in caplog.text and not asked
    else:
        assert {key: asked[key] for key in expected} == expected and asked['channels_last'] is False


def test_upsampler_self_ensemble_flag_overrides_the_options(options_file, tmp_path, self_ensemble_calls):
    seen = self_ensemble_calls
    image = _inputs(tmp_path / 'in')['rgb']
    ensembled = tmp_path / 'ensembled.yml'
    ensembled.write_text(yaml.safe_dump({**tiny_options(), 'inference': {'upsampler_self_ensemble': True}}))
    for options, flags in ((options_file, []), (options_file, ['--upsampler-self-ensemble']), (ensembled, []),
                           (ensembled, ['--no-upsampler-self-ensemble'])):
        assert _run(options, '-i', str(image), '-o', str(tmp_path / f'out{len(seen)}'), '--tile', '0', *flags) == 0
    assert seen == [False, True, True, False]


def test_the_default_options_file_is_found_in_a_plain_install(options_file, tmp_path, monkeypatch):
    """Without ``--opt`` the official options file is looked up like any relative ``--opt``: after a plain install
    (no checkout) it is the installed data's copy, from any folder (it was an absolute path inside site-packages)."""
    import lpnsr_arch.weights as weights
    share = tmp_path / 'share' / 'lpnsr_arch'
    (share / 'options').mkdir(parents=True)
    (share / 'options' / 'inference_lpnsr_official.yml').write_text(options_file.read_text())
    site_packages = tmp_path / 'site-packages'
    (site_packages / 'lpnsr_arch').mkdir(parents=True)
    monkeypatch.setattr(weights, 'REPO_ROOT', site_packages)
    monkeypatch.setattr(weights, 'INSTALLED_DATA', share)
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    inputs = _inputs(tmp_path / 'in')
    assert main(['-i', str(inputs['rgb']), '-o', str(tmp_path / 'out'), '--device', 'cpu', '--quiet']) == 0
    assert (tmp_path / 'out' / 'rgb_out.png').is_file()
