"""User mistakes end the benchmark and dataset CLIs with one line naming the path, option or key, and exit status 2.

Each test runs a CLI's ``main([...])`` in-process on tiny generated files; nothing is downloaded and no network is
built unless the mistake can only be seen on a built one.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
from pathlib import Path
from types import ModuleType
from typing import Callable, Dict, List

import cv2
import numpy as np
import pytest
import yaml

import lpnsr_arch  # noqa: F401  (BasicSR shims first)
from lpnsr_arch.bench import compare_sheet, consistency, quality, speed
from lpnsr_arch.bench.presets import tiny_options

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    """Import ``datasets/<name>.py`` (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(f'cli_errors_{name}', REPO_ROOT / 'datasets' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_image(path: Path, size: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))
    return path


def error_message(run: Callable[[], object], caplog: pytest.LogCaptureFixture) -> str:
    """Run ``run``, expect ``SystemExit(2)``, and return the one ERROR line it logged."""
    caplog.clear()
    with pytest.raises(SystemExit) as info:
        run()
    assert info.value.code == 2
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert '\n' not in errors[0]
    return errors[0]


def argument_error(run: Callable[[], object], capsys: pytest.CaptureFixture) -> str:
    """Run ``run``, expect argparse's ``SystemExit(2)``, and return its stderr (asserted to be one line)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'error:' in err, err
    return err


@pytest.fixture
def files(tmp_path: Path) -> Dict[str, Path]:
    """Good and bad folders, images and options files."""
    paths = {
        'gt': write_image(tmp_path / 'good' / 'gt' / 'a.png', 64).parent,
        'lq': write_image(tmp_path / 'good' / 'lq' / 'ax4.png', 16).parent,
        'empty': tmp_path / 'empty',
        'bad': tmp_path / 'bad',
        'unpaired_gt': write_image(tmp_path / 'unpaired' / 'gt' / 'a.png', 64).parent,
        'unpaired_lq': write_image(tmp_path / 'unpaired' / 'lq' / 'zzz.png', 16).parent,
        'x2_gt': write_image(tmp_path / 'x2' / 'gt' / 'a.png', 64).parent,
        'x2_lq': write_image(tmp_path / 'x2' / 'lq' / 'a.png', 32).parent,
        'hr': write_image(tmp_path / 'hr' / 'h.png', 100).parent,
        'tiny_gt': write_image(tmp_path / 'tiny' / 'gt' / 't.png', 8).parent,
        'tiny_lq': write_image(tmp_path / 'tiny' / 'lq' / 't.png', 2).parent,
        'twin_gt': write_image(tmp_path / 'twin' / 'gt' / 'a.png', 64).parent,
        'file': tmp_path / 'a_file',
        'malformed': tmp_path / 'malformed.yml',
        'list': tmp_path / 'list.yml',
        'no_unet': tmp_path / 'no_unet.yml',
    }
    write_image(paths['twin_gt'] / 'a.bmp', 64)
    paths['empty'].mkdir()
    paths['bad'].mkdir()
    (paths['bad'] / 'x.png').write_text('not an image\n')
    paths['file'].write_text('a file\n')
    paths['malformed'].write_text('network_unet: [1, 2\n  bad: {\n')
    paths['list'].write_text('- 1\n- 2\n')
    options = tiny_options()
    del options['network_unet']
    paths['no_unet'].write_text(yaml.safe_dump(options))
    return paths


def run_quality(*args: str) -> Callable[[], object]:
    return lambda: quality.main(['--device', 'cpu', *args])


# ----------------------------------------------------------------------------------------------------------------
# the shared helper
# ----------------------------------------------------------------------------------------------------------------
def test_user_errors_turns_only_user_mistakes_into_exit_2(caplog):
    from lpnsr_arch.cli_errors import error_line, user_errors
    log = logging.getLogger('test_cli_errors')
    assert error_line(KeyError('no block network_g')) == 'no block network_g'  # not "'no block network_g'"
    assert error_line(ValueError('line one\n  line two\n')) == 'line one line two'

    def missing() -> None:
        with user_errors(log, '--opt x.yml: '):
            raise FileNotFoundError('x.yml does not exist')

    assert error_message(missing, caplog) == '--opt x.yml: x.yml does not exist'
    with pytest.raises(ZeroDivisionError):  # a programming error keeps its traceback
        with user_errors(log):
            raise ZeroDivisionError('a bug')


def test_a_programming_error_in_a_benchmark_still_raises(files, caplog, monkeypatch):
    dataset = f'd={files["gt"]},{files["lq"]}'
    message = error_message(run_quality('--method', 'bicubic', '--dataset', f'd=,{files["bad"]}'), caplog)
    assert 'x.png' in message  # a user mistake: one line, exit 2

    def broken_reader(path):
        raise ZeroDivisionError('a bug, not a user mistake')

    monkeypatch.setattr('lpnsr_arch.bench.common.read_image', broken_reader)
    with pytest.raises(ZeroDivisionError):
        quality.main(['--device', 'cpu', '--method', 'bicubic', '--dataset', dataset])


# ----------------------------------------------------------------------------------------------------------------
# bench.quality / bench.consistency: folders, images, pairs, options
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('dataset, expected', [
    ('d={tmp}/nope,{tmp}/nope', ['--dataset d=', 'nope', 'does not exist']),
    ('d=,{empty}', ['empty', 'no image files']),
    ('d=,{bad}', ['x.png', 'not a readable image']),
    ('d={unpaired_gt},{unpaired_lq}', ['zzz.png', 'no GT file']),
    ('d={x2_gt},{x2_lq}', ['x2/gt/a.png', 'does not match the x4 output']),
    ('d={file},{file}', ['a_file', 'not a folder']),
    ('d={tiny_gt},{tiny_lq}', ['tiny/lq/t.png', 'less --crop-border 4', 'too small to score']),
    ('d={twin_gt},{lq}', ['twin/gt', 'a.bmp, a.png', 'differ only in extension']),
    ('just_a_folder', ['--dataset just_a_folder', 'NAME=GT_DIR,LQ_DIR']),
])
def test_quality_dataset_mistakes(files, tmp_path, caplog, dataset, expected):
    text = dataset.format(tmp=tmp_path, **files)
    message = error_message(run_quality('--method', 'bicubic', '--dataset', text), caplog)
    assert all(part in message for part in expected), message


@pytest.mark.parametrize('method, expected', [
    ('lpnsr:{tmp}/nope.yml', ['--method lpnsr:', 'nope.yml', 'does not exist']),
    ('lpnsr:{malformed}', ['malformed.yml', 'not valid YAML', 'line 2']),
    ('lpnsr:{list}', ['list.yml', 'YAML mapping']),
    ('lpnsr:{no_unet}', ['no_unet.yml', 'network_unet']),
    ('basicsr:{no_unet}', ['no_unet.yml', 'network_g']),
    ('lpnsr:@nosuch', ['@nosuch', "unknown preset 'nosuch'"]),
    ('nosuch', ['--method', "'nosuch'", 'kind must be']),
])
def test_quality_method_mistakes(files, tmp_path, caplog, method, expected):
    text = method.format(tmp=tmp_path, **files)
    out = tmp_path / 'new' / 'results'
    message = error_message(run_quality('--method', 'bicubic', '--method', text, '--dataset',
                                        f'd={files["gt"]},{files["lq"]}', '--out', str(out)), caplog)
    assert all(part in message for part in expected), message
    assert not (tmp_path / 'new').exists(), 'a refused run leaves no output folder behind'


def test_quality_output_device_and_numbers(files, caplog, capsys):
    dataset = f'd={files["gt"]},{files["lq"]}'
    message = error_message(run_quality('--method', 'bicubic', '--dataset', dataset, '--out', str(files['file'])),
                            caplog)
    assert '--out' in message and 'a_file' in message and 'not a folder' in message
    message = error_message(run_quality('--method', 'bicubic', '--dataset', dataset, '--device', 'cuda:99'), caplog)
    assert message.startswith('--device cuda:99:') and 'not available' in message
    for device in ('meta', 'mps'):  # torch's own errors (an mps build check, an AssertionError for xpu) were tracebacks
        message = error_message(run_quality('--method', 'bicubic', '--dataset', dataset, '--device', device), caplog)
        assert message.startswith(f'--device {device}:'), message
    for option, value in (('--crop-border', '-1'), ('--limit', '0'), ('--tile', '-16')):
        err = argument_error(run_quality('--method', 'bicubic', '--dataset', dataset, option, value), capsys)
        assert option in err and value in err


def test_quality_refuses_a_tile_the_networks_cannot_take(files, tmp_path, caplog):
    options = tmp_path / 'tiny.yml'
    options.write_text(yaml.safe_dump(tiny_options()))
    message = error_message(run_quality('--method', f'lpnsr:{options}', '--dataset', f'd={files["gt"]},{files["lq"]}',
                                        '--tile', '24', '--out', str(tmp_path / 'new' / 'q')), caplog)
    assert 'tiny.yml' in message and 'tile must be a multiple of 16, got 24' in message
    assert not (tmp_path / 'new').exists(), 'the folders the refused run made are removed again'


def test_a_method_refused_while_it_is_built_leaves_no_output_folder(files, tmp_path, caplog):
    """A missing checkpoint is found when the method is built, after --out was made: the folders made go again (an
    existing --out stays, with what it held)."""
    options = tiny_options()
    options['path'] = {'pretrain_network_unet': str(tmp_path / 'missing.pth')}
    (tmp_path / 'missing_ckpt.yml').write_text(yaml.safe_dump(options))
    dataset = f'd={files["gt"]},{files["lq"]}'
    runs = {
        'quality': lambda out: run_quality('--method', 'bicubic', '--method', f'lpnsr:{tmp_path}/missing_ckpt.yml',
                                           '--dataset', dataset, '--out', out),
        'consistency': lambda out: lambda: consistency.main(['--device', 'cpu', '--seeds', '2', '--pipeline',
                                                             f'{tmp_path}/missing_ckpt.yml', '--dataset', dataset,
                                                             '--out', out]),
    }
    kept = tmp_path / 'kept'
    kept.mkdir()
    (kept / 'earlier.csv').write_text('x\n')
    for name, run in runs.items():
        message = error_message(run(str(tmp_path / 'new' / name)), caplog)
        assert 'missing.pth' in message and 'does not exist' in message, message
        assert not (tmp_path / 'new').exists(), name
        error_message(run(str(kept)), caplog)
        assert sorted(p.name for p in kept.iterdir()) == ['earlier.csv'], name


def test_consistency_mistakes(files, tmp_path, caplog, capsys):
    options = tmp_path / 'tiny.yml'
    options.write_text(yaml.safe_dump(tiny_options()))
    good = f'd={files["gt"]},{files["lq"]}'

    def run(*args: str) -> Callable[[], object]:
        return lambda: consistency.main(['--device', 'cpu', '--seeds', '2', *args])

    message = error_message(run('--pipeline', str(options), '--dataset', f'd={files["x2_gt"]},{files["x2_lq"]}'),
                            caplog)
    assert 'x2/gt/a.png' in message and 'does not match' in message
    message = error_message(run('--pipeline', str(files['malformed']), '--dataset', good), caplog)
    assert message.startswith('--pipeline ') and 'malformed.yml' in message and 'not valid YAML' in message
    message = error_message(run('--pipeline', str(files['no_unet']), '--dataset', good), caplog)
    assert 'no_unet.yml' in message and 'network_unet' in message
    message = error_message(run('--pipeline', str(options), '--dataset', good, '--out', str(files['file'])), caplog)
    assert '--out' in message and 'a_file' in message
    err = argument_error(lambda: consistency.main(['--pipeline', str(options), '--dataset', good, '--seeds', '1']),
                         capsys)
    assert '--seeds' in err and 'at least 2' in err


# ----------------------------------------------------------------------------------------------------------------
# bench.speed / bench.compare_sheet
# ----------------------------------------------------------------------------------------------------------------
def test_speed_mistakes(files, caplog, capsys):
    base = ['--preset', 'tiny', '--device', 'cpu', '--repeats', '1', '--warmup', '0']
    message = error_message(lambda: speed.main([*base, '--no-train', '--out', str(files['file'])]), caplog)
    assert '--out' in message and 'a_file' in message
    message = error_message(lambda: speed.main([*base, '--no-train', '--paths', 'nosuch']), caplog)
    assert "unknown --paths ['nosuch']" in message
    message = error_message(lambda: speed.main([*base, '--no-train', '--no-infer']), caplog)
    assert 'nothing to run' in message
    message = error_message(lambda: speed.main([*base, '--no-train', '--sizes', '32', '--tile', '16',
                                                '--tile-overlap', '16']), caplog)
    assert '--tile 16 --tile-overlap 16' in message
    for option, value in (('--sizes', '0'), ('--repeats', '0'), ('--warmup', '-1'), ('--train-batch', '0'),
                          ('--tile', '0')):
        err = argument_error(lambda: speed.main([*base, option, value]), capsys)
        assert option in err and value in err


def test_compare_sheet_mistakes(files, tmp_path, caplog):
    lq, gt = files['lq'] / 'ax4.png', files['gt'] / 'a.png'
    out = ['--device', 'cpu', '--out', str(tmp_path / 'sheets')]
    cases = [
        (['--lq', str(tmp_path / 'nope.png')], ['nope.png', 'no such file']),
        (['--lq', str(files['bad'] / 'x.png')], ['x.png', 'not a readable image']),
        (['--lq', str(files['x2_lq'] / 'a.png'), '--gt', str(files['x2_gt'] / 'a.png')], ['x2/gt/a.png']),
        (['--lq', str(lq), '--gt', str(gt), '--gt', str(gt)], ['--gt given 2 times for 1 --lq']),
        (['--lq', str(lq), '--crop', '0,0,0'], ["crop '0,0,0'"]),
        (['--lq', str(lq), '--crop', '0,0,64'], ['--crop for', 'ax4.png', 'exceeds the LR image (16, 16)']),
        (['--lq', str(lq), '--method', f'lpnsr:{files["malformed"]}'], ['--method lpnsr:', 'malformed.yml']),
    ]
    for args, expected in cases:
        message = error_message(lambda: compare_sheet.main([*args, *out]), caplog)
        assert all(part in message for part in expected), message
    message = error_message(lambda: compare_sheet.main(['--lq', str(lq), '--device', 'cpu', '--out',
                                                        str(files['file'])]), caplog)
    assert '--out' in message and 'a_file' in message
    assert not (tmp_path / 'sheets').exists() or not any((tmp_path / 'sheets').iterdir())


# ----------------------------------------------------------------------------------------------------------------
# datasets/*.py
# ----------------------------------------------------------------------------------------------------------------
def test_extract_subimages_mistakes(files, tmp_path, caplog, capsys):
    script = load_script('extract_subimages')
    cases = [
        (['--input', str(tmp_path / 'nope')], ['--input', 'nope', 'does not exist']),
        (['--input', str(files['empty'])], ['empty', 'holds no image']),
        (['--input', str(files['bad'])], ['x.png', 'cannot read image']),
        (['--input', str(files['hr']), '--output', str(files['file'])], ['--output', 'a_file', 'not a folder']),
    ]
    for args, expected in cases:
        argv = args if '--output' in args else [*args, '--output', str(tmp_path / 'sub')]
        message = error_message(lambda: script.main([*argv, '--crop-size', '32', '--step', '32']), caplog)
        assert all(part in message for part in expected), message
    err = argument_error(lambda: script.main(['--input', str(files['hr']), '--output', str(tmp_path / 'sub'),
                                              '--crop-size', '0']), capsys)
    assert '--crop-size' in err


def folder_digest(folder: Path) -> Dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def test_make_lmdb_mistakes_and_an_existing_database_is_left_untouched(files, tmp_path, caplog):
    script = load_script('make_lmdb')
    existing = tmp_path / 'existing.lmdb'
    assert script.main(['--input', str(files['hr']), '--output', str(existing)]) == 1
    before = folder_digest(existing)
    message = error_message(lambda: script.main(['--input', str(files['gt']), '--output', str(existing)]), caplog)
    assert 'existing.lmdb' in message and 'already exists' in message
    assert folder_digest(existing) == before  # nothing already written is lost
    cases = [
        (['--input', str(tmp_path / 'nope')], ['--input', 'nope', 'does not exist']),
        (['--input', str(files['empty'])], ['empty', 'holds no image']),
        (['--input', str(files['bad'])], ['x.png', 'not readable images']),
    ]
    for args, expected in cases:
        message = error_message(lambda: script.main([*args, '--output', str(tmp_path / 'new.lmdb')]), caplog)
        assert all(part in message for part in expected), message
        assert not (tmp_path / 'new.lmdb').exists()  # no half-written database
    a_file = tmp_path / 'file.lmdb'
    a_file.write_text('keep me')
    message = error_message(lambda: script.main(['--input', str(files['hr']), '--output', str(a_file)]), caplog)
    assert 'file.lmdb' in message and a_file.read_text() == 'keep me'
    assert not [path.name for path in tmp_path.iterdir() if 'partial' in path.name]


def test_make_test_pairs_mistakes(files, tmp_path, caplog, capsys):
    script = load_script('make_test_pairs')
    (tmp_path / 'no_train.yml').write_text(yaml.safe_dump({'scale': 4}))
    cases: List[tuple] = [
        (['--hr', str(tmp_path / 'nope')], ['--hr', 'nope', 'does not exist']),
        (['--hr', str(files['empty'])], ['empty', 'holds no image']),
        (['--hr', str(files['bad']), '--degradation', 'bicubic'], ['x.png', 'cannot read image']),
        (['--hr', str(files['lq'])], ['ax4.png', 'at least']),  # 16 px: too small for the realesrgan degradation
        (['--hr', str(files['hr']), '--opt', str(tmp_path / 'nope.yml')], ['--opt', 'nope.yml', 'does not exist']),
        (['--hr', str(files['hr']), '--opt', str(files['malformed'])], ['malformed.yml', 'not valid YAML']),
        (['--hr', str(files['hr']), '--opt', str(files['list'])], ['list.yml', 'YAML mapping']),
        (['--hr', str(files['hr']), '--opt', str(tmp_path / 'no_train.yml')], ['no_train.yml', 'datasets.train']),
    ]
    for args, expected in cases:
        message = error_message(lambda: script.main([*args, '--out', str(tmp_path / 'pairs')]), caplog)
        assert all(part in message for part in expected), message
        assert not (tmp_path / 'pairs').exists()  # refused before anything is written
    message = error_message(lambda: script.main(['--hr', str(files['hr']), '--out', str(files['file']),
                                                 '--degradation', 'bicubic']), caplog)
    assert '--out' in message and 'a_file' in message
    err = argument_error(lambda: script.main(['--hr', str(files['hr']), '--out', str(tmp_path / 'p'), '--scale',
                                              '0']), capsys)
    assert '--scale' in err
    clashing = tmp_path / 'clashing'  # a/b.png and a_b.png would both be written as a_b.png
    (clashing / 'a').mkdir(parents=True)
    image = np.full((32, 32, 3), 128, np.uint8)
    for path in (clashing / 'a' / 'b.png', clashing / 'a_b.png', clashing / 'c.png'):
        cv2.imwrite(str(path), image)
    message = error_message(lambda: script.main(['--hr', str(clashing), '--out', str(tmp_path / 'pairs'),
                                                 '--degradation', 'bicubic']), caplog)
    assert 'a_b.png <- ' in message and 'b.png' in message and 'c.png' not in message, message
    assert not (tmp_path / 'pairs').exists()


def test_make_demo_hr_mistakes(files, tmp_path, caplog, capsys):
    script = load_script('make_demo_hr')
    out = str(tmp_path / 'demo')
    cases = [
        (['--out', str(files['file']), '--images', 'camera'], ['--out', 'a_file', 'not a folder']),
        (['--out', out, '--images', 'camera', 'nosuch'], ['--images', 'nosuch']),
        (['--out', out, '--images', 'camera', '--crop-size', '100000'], ['--crop-size 100000', 'camera']),
    ]
    for args, expected in cases:
        message = error_message(lambda: script.main(args), caplog)
        assert all(part in message for part in expected), message
        assert not (tmp_path / 'demo').exists()  # refused before anything is written
    for option, value in (('--crop-size', '0'), ('--crops-per-image', '-1')):
        err = argument_error(lambda: script.main(['--out', out, option, value]), capsys)
        assert option in err
