"""The benchmarks end to end on tiny random-weight models and tiny generated images."""
import json
import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import lpnsr_arch  # noqa: F401
from lpnsr_arch.bench import compare_sheet, consistency, quality, speed
from lpnsr_arch.bench.common import build_method, load_pairs, niqe_y, parse_method, parse_run_arguments
from lpnsr_arch.bench.presets import tiny_options


@pytest.fixture(scope='module')
def dataset(tmp_path_factory) -> Path:
    """gt/ (64 px and 256 px) and lq/ (a quarter of that, named with an x4 suffix) from a noisy test pattern."""
    root = tmp_path_factory.mktemp('data')
    (root / 'gt').mkdir()
    (root / 'lq').mkdir()
    rng = np.random.default_rng(0)
    for name, size in (('a_small', 64), ('b_big', 256)):
        ys, xs = np.mgrid[0:size, 0:size] / size
        gt = np.stack([np.sin(6 * xs), np.cos(5 * ys), xs * ys], axis=2) * 100 + 120
        gt = np.clip(gt + rng.normal(0, 12, gt.shape), 0, 255).astype(np.uint8)  # texture: NIQE needs some
        cv2.imwrite(str(root / 'gt' / f'{name}.png'), gt)
        cv2.imwrite(str(root / 'lq' / f'{name}x4.png'), cv2.resize(gt, (size // 4, size // 4),
                                                                 interpolation=cv2.INTER_AREA))
    return root


@pytest.fixture(scope='module')
def options_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('opt') / 'tiny.yml'
    path.write_text(yaml.safe_dump(tiny_options()))
    return path


@pytest.fixture(scope='module')
def trained_options_file(tmp_path_factory) -> Path:
    """The tiny preset with its denoiser and noise predictor loaded from files (random weights saved once), so that
    every run that builds it has the same networks."""
    from basicsr.archs import build_network

    from lpnsr_arch.weights import save_state_dict
    folder = tmp_path_factory.mktemp('trained')
    options = tiny_options()
    options['path'] = {}
    for index, key in enumerate(('unet', 'noise')):
        torch.manual_seed(index)
        save_state_dict(folder / f'{key}.safetensors', build_network(dict(options[f'network_{key}'])).state_dict())
        options['path'][f'pretrain_network_{key}'] = str(folder / f'{key}.safetensors')
    path = folder / 'tiny_trained.yml'
    path.write_text(yaml.safe_dump(options))
    return path


def test_pairs_and_method_specs(dataset):
    pairs = load_pairs(dataset / 'gt', dataset / 'lq')
    assert [(p.name, p.gt.name) for p in pairs] == [('a_smallx4', 'a_small.png'), ('b_bigx4', 'b_big.png')]
    assert parse_method('ours=lpnsr:opt/x.yml').name == 'ours'
    assert parse_method('basicsr:opt/rrdb.yml').name == 'basicsr-rrdb'
    with pytest.raises(ValueError, match='needs an options file'):
        parse_method('lpnsr')
    with pytest.raises(ValueError, match='kind must be bicubic or basicsr or lpnsr'):
        parse_method('folder:results/x')  # only where the benchmark takes saved outputs
    folders = ('bicubic', 'folder')
    assert parse_method('folder:results/official/{dataset}', kinds=folders).name == 'folder-official'
    assert parse_method('folder:{dataset}', kinds=folders).name == 'folder-{dataset}'
    spec = parse_method('mine=folder:runs/seed=7/{dataset}', kinds=folders)  # an '=' in the path is the path's
    assert (spec.name, spec.kind, spec.options) == ('mine', 'folder', 'runs/seed=7/{dataset}')
    assert parse_method('lpnsr:runs/lr=1e-4/options.yml').name == 'lpnsr-options'
    with pytest.raises(ValueError, match='folder needs the folder of saved outputs'):
        parse_method('folder', kinds=('folder', ))
    preset = parse_method('lpnsr:@tiny')  # a preset: the configuration with random weights
    assert (preset.name, preset.kind, preset.options) == ('lpnsr-tiny', 'lpnsr', '@tiny')
    method = build_method(preset, device=torch.device('cpu'))
    lr01 = torch.rand(1, 3, 16, 16)
    assert method.stochastic and method.upscale(lr01, 0).shape == (1, 3, 64, 64)
    torch.testing.assert_close(method.upscale(lr01, 0), method.upscale(lr01, 0), rtol=0, atol=0)


def _refused(parser, argv, capsys) -> str:
    """argparse's usage error (exit 2) for ``argv``: its message."""
    with pytest.raises(SystemExit) as info:
        parser.parse_args(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


def test_shared_cli_arguments(capsys):
    args, device = parse_run_arguments(quality.build_parser(), ['--method', 'bicubic', '--dataset', 'd=a,b',
                                                                 '--device', 'cpu', '--precision', 'bf16'])
    assert device == torch.device('cpu') and args.precision == 'bf16' and args.tile is None and args.out is None
    # the sheet has nowhere to go without --out
    assert 'the following arguments are required: --out' in _refused(compare_sheet.build_parser(), ['--lq', 'a.png'],
                                                                        capsys)
    # speed has its own --tile default and no --precision
    assert 'unrecognized arguments: --precision bf16' in _refused(speed.build_parser(), ['--precision', 'bf16'], capsys)
    assert speed.build_parser().parse_args([]).tile == 256
    # --limit 0 is refused, not read as "all"
    assert 'argument --limit' in _refused(quality.build_parser(), ['--method', 'bicubic', '--dataset', 'd=a,b',
                                                                   '--limit', '0'], capsys)


def test_niqe_needs_two_blocks(dataset):
    big = cv2.imread(str(dataset / 'gt' / 'b_big.png')).astype(np.float64)
    assert 0 < niqe_y(big, crop_border=4) < 100
    assert not math.isnan(niqe_y(big[:100], crop_border=0))  # one row of two 96-px blocks
    assert math.isnan(niqe_y(big[:120, :120], crop_border=4))  # a single block: no covariance


def test_quality_table(dataset, options_file, tmp_path):
    table = quality.main(['--method', 'bicubic', '--method', f'lpnsr:{options_file}', '--dataset',
                          f'toy={dataset / "gt"},{dataset / "lq"}', '--limit', '1', '--device', 'cpu', '--out',
                          str(tmp_path)])
    rows = {row['method']: row for row in table.rows}
    bicubic = rows['bicubic']
    assert bicubic['images'] == 1 and 15 < bicubic['psnr_y'] < 60 and 0 < bicubic['ssim_y'] <= 1
    assert bicubic['niqe_images'] == 0 and math.isnan(bicubic['niqe'])  # 64 px: too small for NIQE
    assert rows['lpnsr-tiny']['psnr_y'] < bicubic['psnr_y']  # random weights are worse than bicubic
    saved = json.loads((tmp_path / 'quality.json').read_text())
    assert len(saved['rows']) == 2 and saved['rows'][0]['niqe'] is None
    assert (tmp_path / 'quality.csv').read_text().startswith('method,dataset')
    per_image = json.loads((tmp_path / 'quality_per_image.json').read_text())['rows']
    assert [(row['method'], row['image']) for row in per_image] == [('bicubic', 'a_smallx4'),
                                                                     ('lpnsr-tiny', 'a_smallx4')]
    assert per_image[0]['psnr_y'] == pytest.approx(bicubic['psnr_y'])


def test_quality_scores_saved_outputs_as_the_run_that_wrote_them(dataset, trained_options_file, tmp_path):
    """A folder method (``{dataset}`` in its path) scores the files ``lpnsr_arch/inference.py`` wrote exactly as the
    same LPNSR run computed inside the benchmark: same seed, same numbers, image by image (RGB images; the saved
    output of a grey input is grey, the mean of the channels the benchmark would score)."""
    from lpnsr_arch.inference import main as inference_main
    saved = tmp_path / 'outputs' / 'toy'
    assert inference_main(['-i', str(dataset / 'lq'), '-o', str(saved), '--opt', str(trained_options_file),
                           '--seed', '7', '--device', 'cpu', '--suffix', 'lpnsr', '--precision', 'fp32']) == 0
    assert sorted(p.name for p in saved.iterdir()) == ['a_smallx4_lpnsr.png', 'b_bigx4_lpnsr.png']
    quality.main(['--method', f'lpnsr:{trained_options_file}',
                  '--method', f'folder:{tmp_path / "outputs"}/{{dataset}}',
                  '--dataset', f'toy={dataset / "gt"},{dataset / "lq"}', '--seed', '7', '--device', 'cpu',
                  '--out', str(tmp_path / 'report')])
    rows = json.loads((tmp_path / 'report' / 'quality_per_image.json').read_text())['rows']
    by_method = {}
    for row in rows:
        by_method.setdefault(row['method'], []).append((row['image'], row['psnr_y'], row['ssim_y'], row['niqe']))
    assert set(by_method) == {'lpnsr-tiny_trained', 'folder-outputs'}
    assert by_method['folder-outputs'] == by_method['lpnsr-tiny_trained'] and len(by_method['folder-outputs']) == 2

    # the demo's sheet: the saved output as one column, beside the same run computed with that seed and one more
    table = compare_sheet.main(['--lq', str(dataset / 'lq' / 'b_bigx4.png'), '--method', f'lpnsr s7=folder:{saved}',
                                '--method', f'lpnsr=lpnsr:{trained_options_file}', '--seeds', '7', '8',
                                '--crop', '0,0,16', '--device', 'cpu', '--out', str(tmp_path / 'sheets')])
    assert table.rows[0]['columns'] == 'LR | bicubic | lpnsr s7 | lpnsr s7 | lpnsr s8'
    tiles = np.split(cv2.imread(table.rows[0]['sheet']), 5, axis=1)  # five 64 px columns
    assert np.array_equal(tiles[2], tiles[3]) and not np.array_equal(tiles[3], tiles[4])


def test_saved_outputs_that_are_missing_ambiguous_or_the_wrong_size_are_refused_before_any_method_runs(
        dataset, tmp_path, caplog):
    import shutil

    from lpnsr_arch.bench.common import match_saved_outputs
    pairs = load_pairs(dataset / 'gt', dataset / 'lq')
    outputs = tmp_path / 'outputs'
    outputs.mkdir()
    for pair, size in zip(pairs, (64, 256)):
        cv2.imwrite(str(outputs / f'{pair.name}_sr.png'), np.zeros((size, size, 3), np.uint8))
    assert {name: path.name for name, path in match_saved_outputs(outputs, pairs).items()} == {
        'a_smallx4': 'a_smallx4_sr.png', 'b_bigx4': 'b_bigx4_sr.png'}
    shutil.copy(outputs / 'b_bigx4_sr.png', outputs / 'b_big.png')  # the GT's name, exactly: preferred
    assert match_saved_outputs(outputs, pairs)['b_bigx4'].name == 'b_big.png'
    shutil.copy(outputs / 'a_smallx4_sr.png', outputs / 'a_small_other.png')
    with pytest.raises(ValueError, match=r'more than one saved output for a_smallx4 \(a_small_other.png, '
                                         r'a_smallx4_sr.png\)'):
        match_saved_outputs(outputs, pairs)
    (outputs / 'a_small_other.png').unlink()
    (outputs / 'a_smallx4_sr.png').unlink()
    with pytest.raises(FileNotFoundError, match='no saved output for 1 image.*a_smallx4'):
        match_saved_outputs(outputs, pairs)

    cv2.imwrite(str(outputs / 'a_smallx4_sr.png'), np.zeros((60, 64, 3), np.uint8))  # not x4 its 16 px LQ
    report = tmp_path / 'report'
    caplog.set_level(logging.INFO, logger='lpnsr_arch.bench')
    with pytest.raises(SystemExit) as info:
        quality.main(['--method', 'bicubic', '--method', f'folder:{outputs}', '--dataset',
                      f'toy={dataset / "gt"},{dataset / "lq"}', '--device', 'cpu', '--out', str(report)])
    assert info.value.code == 2 and 'a_smallx4_sr.png: (60, 64) is not x4 its LQ image' in caplog.text
    assert 'bicubic on toy' not in caplog.text and not report.exists()  # refused before the bicubic method ran
    with pytest.raises(SystemExit):
        quality.main(['--method', 'bicubic', '--dataset', f'toy={dataset / "gt"},{dataset / "lq"}',
                      '--dataset', f'toy={dataset / "gt"},{dataset / "lq"}', '--device', 'cpu'])
    assert "the name 'toy' is given to two datasets" in caplog.text

    cv2.imwrite(str(outputs / 'a_smallx4_sr.png'), np.full((64, 64, 3), 200, np.uint8))  # x4 now
    with pytest.raises(SystemExit):  # one folder for two datasets whose images share names: the same files twice
        quality.main(['--method', f'folder:{outputs}', '--dataset', f'toy={dataset / "gt"},{dataset / "lq"}',
                      '--dataset', f'toy2={dataset / "gt"},{dataset / "lq"}', '--device', 'cpu'])
    assert 'would be scored for both datasets toy and toy2' in caplog.text
    table = compare_sheet.main(['--lq', str(pairs[0].lq), '--method', f'saved=folder:{outputs}', '--device', 'cpu',
                                '--out', str(tmp_path / 'sheets')])  # the sheet takes a folder column too
    assert table.rows[0]['columns'] == 'LR | bicubic | saved'
    sheet = cv2.imread(table.rows[0]['sheet'])
    assert (sheet == 200).all(axis=2).sum() >= 32 * 32  # the saved image's centre crop (8 LR px, 32 px here)
    with pytest.raises(SystemExit):  # a sheet has no datasets to fill {dataset} in with
        compare_sheet.main(['--lq', str(pairs[0].lq), '--method', f'folder:{outputs}/{{dataset}}', '--device', 'cpu',
                            '--out', str(tmp_path / 'sheets2')])
    assert '{dataset} in the folder needs named datasets' in caplog.text and not (tmp_path / 'sheets2').exists()


def test_saved_outputs_go_to_the_image_whose_name_they_match_best(tmp_path):
    from lpnsr_arch.bench.common import ImagePair, match_saved_outputs

    def match(lq_names, files):
        folder = tmp_path / f'case{len(list(tmp_path.iterdir()))}'
        folder.mkdir()
        for name in files:
            (folder / name).touch()
        pairs = [ImagePair(name, folder / 'lq' / f'{name}.png') for name in lq_names]
        return {image: file.name for image, file in match_saved_outputs(folder, pairs).items()}

    assert match(['a', 'a_b'], ['a_out.png', 'a_b_out.png']) == {'a': 'a_out.png', 'a_b': 'a_b_out.png'}
    with pytest.raises(FileNotFoundError, match=r'no saved output for 1 image\(s\): a '):
        match(['a', 'a_b'], ['a_b_out.png'])  # a_b's output is not taken for a's
    assert match(['babyx4'], ['baby.png', 'babyx4_lpnsr.png']) == {'babyx4': 'baby.png'}  # an exact name first
    with pytest.raises(ValueError, match=r'match more than one image equally well: a.png \(a_lq, ax4\)'):
        match(['a_lq', 'ax4'], ['a.png'])  # both LQ names less their suffix are 'a'


def test_quality_summary_mean_and_median():
    scores = [{'psnr_y': p, 'ssim_y': 0.5, 'niqe': n, 'seconds': 1.0}
              for p, n in [(20.0, 5.0), (22.0, 6.0), (24.0, 30.0), (26.0, math.nan)]]
    row = quality.summarise('m', 'd', scores)
    assert row['images'] == 4 and row['psnr_y'] == pytest.approx(23.0) and row['seconds_per_image'] == 1.0
    assert row['niqe_images'] == 3 and row['niqe'] == pytest.approx(41 / 3)  # the outlier moves the mean
    assert row['niqe_median'] == pytest.approx(6.0)  # but not the median


def test_consistency_separates_seeds(dataset, options_file, tmp_path):
    table = consistency.main(['--pipeline', str(options_file), '--seeds', '2', '--dataset',
                              f'toy={dataset / "gt"},{dataset / "lq"}', '--limit', '1', '--device', 'cpu', '--out',
                              str(tmp_path)])
    assert [row['noise'] for row in table.rows] == ['learned', 'gaussian']
    for row in table.rows:
        assert row['pixel_std'] > 0 and row['psnr_y_std'] > 0  # two seeds gave two different images
    assert (tmp_path / 'consistency.csv').exists()


def test_consistency_statistics_are_population_stds_over_the_seeds(dataset):
    """Two seeds whose outputs are flat images 2 levels apart: pixel_std 1 level (ddof 0), and the PSNR std half
    the two PSNRs' difference."""
    import types
    from lpnsr_arch.bench.common import psnr_ssim_y, read_gt, to_bgr255

    def fake_pipeline(lr01, *, seed, **_):
        return torch.full((1, 3, lr01.shape[-2] * 4, lr01.shape[-1] * 4), (100 + 2 * seed) / 255)

    pair = types.SimpleNamespace(lq=dataset / 'lq' / 'a_smallx4.png', gt=dataset / 'gt' / 'a_small.png')
    stats = consistency.image_consistency(fake_pipeline, pair, noise='learned', seeds=[0, 1], crop_border=4,
                                          tile=None, precision='fp32', device=torch.device('cpu'))
    assert stats['pixel_std'] == pytest.approx(1.0)
    psnrs = []
    for seed in (0, 1):
        sr01 = fake_pipeline(torch.zeros(1, 3, 16, 16), seed=seed)
        psnrs.append(psnr_ssim_y(to_bgr255(sr01), read_gt(pair.gt, sr01.shape), 4)[0])
    assert stats['psnr_y_std'] == pytest.approx(abs(psnrs[0] - psnrs[1]) / 2)
    assert stats['psnr_y_mean'] == pytest.approx(sum(psnrs) / 2)


def test_speed_runs_the_reference_and_fast_paths(tmp_path):
    tables = speed.main(['--preset', 'tiny', '--no-train', '--sizes', '16', '32', '--tile', '16', '--tile-overlap',
                         '0', '--paths', 'bf16_tile_batch', '--repeats', '1', '--warmup', '0', '--device', 'cpu',
                         '--out', str(tmp_path)])
    assert list(tables) == ['speed']
    table = tables['speed']
    paths = [(row['case'], row['path']) for row in table.rows]
    assert paths == [('lr16', 'eager_fp32'), ('lr32_tiled', 'eager_fp32'), ('lr32_tiled', 'bf16_tile_batch')]
    for row in table.rows:
        assert 'error' not in row, row
        assert row['gflop'] > 0 and math.isfinite(row['median_ms'])
        assert row['max_abs_diff'] == 0 if row['path'] == 'eager_fp32' else row['max_abs_diff'] < 0.05  # 0.013-0.017
    assert json.loads((tmp_path / 'speed.json').read_text())['rows'][0]['tiles'] == 1


def test_speed_training_step_compares_amp_with_eager_fp32(tmp_path):
    """The LPNSRModel training step, tiny preset: eager fp32 is deterministic (a second run moves the weights
    identically), bf16 autocast updates the weights nearly as fp32 does."""
    lr = 1e-3
    tables = speed.main(['--preset', 'tiny', '--no-infer', '--train-paths', 'bf16', '--train-batch', '2', '--train-hr',
                         '64', '--train-lr', str(lr), '--repeats', '1', '--warmup', '0', '--device', 'cpu', '--out',
                         str(tmp_path)])
    assert list(tables) == ['speed_train']
    rows = {row['path']: row for row in tables['speed_train'].rows}
    assert list(rows) == ['eager_fp32', 'bf16']
    for row in rows.values():
        assert 'error' not in row, row
        assert row['case'] == 'train_b2_hr64' and math.isfinite(row['median_ms']) and row['gflop'] > 0
        assert row['updated'] is True and 0 < row['l_pix'] < 1
        assert math.isnan(row['peak_mem_gib'])  # CPU: printed as n/a
    fp32, bf16 = rows['eager_fp32'], rows['bf16']
    assert fp32['max_abs_param_diff'] == 0 and fp32['update_rel_diff'] == 0
    assert 0 < bf16['max_abs_param_diff'] <= 2.5 * lr  # AdamW's first step moves a weight by at most about lr
    assert bf16['update_rel_diff'] < 0.6  # most gradient signs agree with fp32 (0.25-0.33 measured, seeds 0 and 1)
    assert abs(bf16['l_pix'] - fp32['l_pix']) < 0.05 * fp32['l_pix']
    saved = json.loads((tmp_path / 'speed_train.json').read_text())
    assert [row['path'] for row in saved['rows']] == ['eager_fp32', 'bf16']
    assert saved['rows'][0]['peak_mem_gib'] is None


def test_speed_training_rejects_an_hr_size_the_networks_cannot_take(caplog):
    with pytest.raises(SystemExit) as info:  # one ERROR line, exit status 2, before anything is timed
        speed.main(['--preset', 'tiny', '--no-infer', '--train-batch', '1', '--train-hr', '40', '--device', 'cpu'])
    assert info.value.code == 2
    assert '--train-hr 40: the HR side must be a multiple of 64' in caplog.text


def test_compare_sheet_writes_a_grid(dataset, options_file, tmp_path):
    table = compare_sheet.main(['--lq', str(dataset / 'lq' / 'a_smallx4.png'),
                                '--gt', str(dataset / 'gt' / 'a_small.png'),
                                '--method', f'lpnsr:{options_file}', '--crop', '0,0,8', '--crop', '4,4,8',
                                '--device', 'cpu', '--out', str(tmp_path)])
    row = table.rows[0]
    assert row['columns'] == 'LR | bicubic | lpnsr-tiny s0 | lpnsr-tiny s1 | GT'
    sheet = cv2.imread(row['sheet'])
    assert sheet.shape == (2 * (32 + compare_sheet.LABEL_HEIGHT), 5 * 32, 3)


def test_compare_sheet_keeps_the_seed_in_a_cut_label_and_refuses_two_inputs_with_one_name(dataset, tmp_path, caplog):
    assert compare_sheet.fit_label('lpnsr-inference_lpnsr_demo s1', 18) == 'lpnsr-inf~_demo s1'
    cut = [compare_sheet.fit_label(f'lpnsr-inference_lpnsr_demo s{seed}', 9) for seed in (0, 1)]
    assert cut[0] != cut[1] and all(len(label) == 9 and label.endswith(f's{seed}') for label, seed in zip(cut, (0, 1)))
    assert compare_sheet.fit_label('bicubic', 9) == 'bicubic'
    twin = tmp_path / 'other' / 'a_smallx4.png'
    twin.parent.mkdir()
    twin.write_bytes((dataset / 'lq' / 'a_smallx4.png').read_bytes())
    with pytest.raises(SystemExit) as info:
        compare_sheet.main(['--lq', str(dataset / 'lq' / 'a_smallx4.png'), '--lq', str(twin), '--device', 'cpu',
                            '--out', str(tmp_path / 'sheets')])
    assert info.value.code == 2 and "share the name 'a_smallx4'" in caplog.text
    assert not list((tmp_path / 'sheets').glob('*.png'))


def test_a_gt_at_another_scale_is_refused_with_its_path(dataset, tmp_path, caplog):
    from lpnsr_arch.bench.common import read_gt
    gt = dataset / 'gt' / 'b_big.png'  # 256 px
    assert read_gt(gt, (1, 3, 254, 253)).shape == (254, 253, 3)  # a mod-crop remainder is fine
    with pytest.raises(ValueError, match='b_big.png: GT \\(256, 256\\) does not match the x4 output \\(128, 128\\)'):
        read_gt(gt, (1, 3, 128, 128))  # an x8 LR against this GT
    with pytest.raises(SystemExit) as info:  # the sheet checks its GT the same way, before any method runs
        compare_sheet.main(['--lq', str(dataset / 'lq' / 'b_bigx4.png'), '--gt', str(dataset / 'gt' / 'a_small.png'),
                            '--device', 'cpu', '--out', str(tmp_path)])
    assert info.value.code == 2 and 'a_small.png: GT (64, 64) does not match' in caplog.text


def test_basicsr_method_checkpoints_resolve_from_the_repository(tmp_path, monkeypatch):
    from lpnsr_arch.bench.common import build_method
    monkeypatch.chdir(tmp_path)  # the options name weights/demo/... relative to the repository
    options = Path(__file__).resolve().parents[1] / 'options' / 'demo' / 'test_rrdbnet_upsampler_demo.yml'
    method = build_method(parse_method(f'rrdbnet=basicsr:{options}'), device=torch.device('cpu'))
    assert method.upscale(torch.rand(1, 3, 8, 8), 0).shape == (1, 3, 32, 32)


def test_flop_count_includes_attention_on_the_cpu():
    """The fused CPU attention kernel has no FLOP formula in PyTorch; the speed benchmark registers SDPA's."""
    import torch.nn.functional as F
    from lpnsr_arch.bench.speed import count_flops
    q = torch.randn(1, 1, 256, 32)
    assert count_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == 4 * 256 * 256 * 32


def test_speed_reports_no_difference_when_the_reference_path_fails(monkeypatch):
    from lpnsr_arch.bench.presets import tiny_options
    from lpnsr_arch.pipeline import LPNSRPipeline
    pipeline = LPNSRPipeline.from_options(tiny_options())
    real_time_runs, calls = speed.time_runs, []

    def first_fails(run, device, *, warmup, repeats):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError('compile failed\nsecond line')
        return real_time_runs(run, device, warmup=warmup, repeats=repeats)

    monkeypatch.setattr(speed, 'time_runs', first_fails)
    paths = [speed.SpeedPath('eager_fp32'), speed.SpeedPath('bf16', precision='bf16')]
    rows = speed.run_case(pipeline, speed.SpeedCase('lr16', 16), paths, device=torch.device('cpu'), warmup=0,
                          repeats=1, peak=None)
    assert rows[0] == {'case': 'lr16', 'path': 'eager_fp32', 'error': 'compile failed'}
    assert rows[1]['path'] == 'bf16' and rows[1]['max_abs_diff'] is None  # not 0 against itself


def test_speed_compile_paths_run_untiled_and_leave_the_pipeline_as_it_was(monkeypatch):
    """A compile path also runs on a one-piece case (only plain tile batching is skipped there, being the same
    run); scope 'all' compiles the pre-upsampler and the autoencoder's encoder and decoder too, and every network
    is put back afterwards. ``torch.compile`` is replaced by a recording wrapper (no compiler on the CPU here)."""
    from lpnsr_arch.pipeline import LPNSRPipeline
    options = tiny_options()
    ddconfig = {'z_channels': 3, 'resolution': 64, 'in_channels': 3, 'out_ch': 3, 'ch': 32, 'ch_mult': [1, 1, 1],
                'num_res_blocks': 1, 'attn_resolutions': []}
    latent_channels = options['network_unet']['in_channels']  # as the pixel autoencoder it replaces
    options['network_ae'] = {'type': 'LPNSRVQAutoencoder', 'ddconfig': ddconfig, 'n_embed': 16,
                             'embed_dim': latent_channels}
    pipeline = LPNSRPipeline.from_options(options)
    before = [(owner, name, getattr(owner, name)) for owner, name in pipeline.compile_targets('all')]
    assert [name for _, name, _ in before] == ['denoiser', 'noise_predictor', 'upsampler', 'encoder', 'decoder']
    compiled = []

    class Recorded(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    def fake_compile(module, *, mode, dynamic):
        compiled.append((type(module).__name__, mode, dynamic))
        return Recorded(module)

    monkeypatch.setattr(torch, 'compile', fake_compile)
    paths = [speed.SpeedPath('eager_fp32'), speed.SpeedPath('bf16_tile_batch', precision='bf16', batch_all_tiles=True),
             speed.SpeedPath('all_cudagraphs', precision='bf16', upsampler_precision='bf16', batch_all_tiles=True,
                             compile_mode='reduce-overhead', compile_scope='all')]
    rows = speed.run_case(pipeline, speed.SpeedCase('lr16', 16), paths, device=torch.device('cpu'), warmup=0,
                          repeats=1, peak=None)
    assert [row['path'] for row in rows] == ['eager_fp32', 'all_cudagraphs']
    assert 'error' not in rows[1] and rows[1]['max_abs_diff'] > 0  # ran in bf16 (a random VQ: codes may flip)
    assert [entry[0] for entry in compiled] == [type(module).__name__ for _, _, module in before]
    assert {entry[1:] for entry in compiled} == {('reduce-overhead', False)}
    assert all(getattr(owner, name) is module for owner, name, module in before)
    with pytest.raises(ValueError, match="compile scope must be one of"):
        pipeline.accelerate(compile_mode='default', compile_scope='everything')
    assert all(getattr(owner, name) is module for owner, name, module in before)  # refused before any change
