"""`make demo` pieces: the sample photos, the weights check, and the export of trained stages to safetensors."""
from __future__ import annotations

import json

import cv2
import pytest
import torch

from lpnsr_arch import demo, export_demo
from lpnsr_arch.weights import CheckpointError, read_state_dict


def test_sample_photos_are_written_as_rgb_pngs(tmp_path):
    paths = demo.write_sample_photos(tmp_path, ['chelsea'])
    image = cv2.imread(str(paths[0]))
    import skimage.data
    assert (image[..., ::-1] == skimage.data.chelsea()).all(), 'RGB written in the right channel order, losslessly'
    with pytest.raises(KeyError, match='--images: unknown image.s. not_a_photo; available: astronaut, brick'):
        demo.write_sample_photos(tmp_path, ['not_a_photo'])
    camera = cv2.imread(str(demo.write_sample_photos(tmp_path, ['camera'])[0]), cv2.IMREAD_UNCHANGED)
    assert camera.shape == (512, 512, 3) and (camera[:, :, 0] == camera[:, :, 2]).all()  # a grey photo, as RGB


def test_missing_weights_name_the_files_and_the_fix(tmp_path, monkeypatch):
    import lpnsr_arch.weights as weights
    demo.check_weights()  # the shipped ones, found from any folder
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(weights, 'REPO_ROOT', tmp_path / 'checkout')
    monkeypatch.setattr(weights, 'INSTALLED_DATA', tmp_path / 'share' / 'lpnsr_arch')
    with pytest.raises(FileNotFoundError, match=r'upsampler_rrdbnet\.safetensors.*train_demo_model\.sh'):
        demo.check_weights()


def test_export_takes_the_ema_weights_of_each_stage(tmp_path):
    for index, run in enumerate(export_demo.DEMO_STAGES.values()):
        models = tmp_path / 'experiments' / run / 'models'
        models.mkdir(parents=True)
        ema = {'w': torch.full((2, ), float(index)), 'layers.0.blocks.1.attn_mask': torch.zeros(4, 64, 64),
               'layers.0.blocks.1.attn.relative_position_index': torch.zeros(64, 64, dtype=torch.long)}
        torch.save({'params': {'w': torch.zeros(2)}, 'params_ema': ema}, models / 'net_g_latest.pth')
    written = export_demo.export_demo(experiments=tmp_path / 'experiments', out=tmp_path / 'weights')
    assert [p.name for p in written] == list(export_demo.DEMO_STAGES)
    for index, path in enumerate(written):
        state = read_state_dict(path)
        assert list(state) == ['w'], 'the Swin buffers the networks rebuild are left out'
        assert torch.equal(state['w'], torch.full((2, ), float(index)))
    with pytest.raises(CheckpointError, match='no net_g_latest.pth nor any net_g_<iter>.pth'):
        export_demo.export_demo(experiments=tmp_path / 'nowhere', out=tmp_path / 'w2')


def test_export_of_one_run_stopped_early(tmp_path):
    models = tmp_path / 'experiments' / 'probe_run' / 'models'
    models.mkdir(parents=True)
    for iteration in (300, 1200, 900):  # no net_g_latest.pth: the last periodic save counts
        torch.save({'params_ema': {'w': torch.full((1, ), float(iteration))}}, models / f'net_g_{iteration}.pth')
    (models / 'net_g_best.pth').write_bytes(b'not a numbered save')
    out = tmp_path / 'out'
    assert export_demo.main(['--experiments', str(tmp_path / 'experiments'), '--out', str(out), '--run',
                             'probe_run']) == 0
    assert [p.name for p in out.iterdir()] == ['probe_run.safetensors']
    assert read_state_dict(out / 'probe_run.safetensors')['w'].item() == 1200.0
    assert export_demo.main(['--experiments', str(tmp_path / 'experiments'), '--out', str(out), '--run',
                             'no_such_run']) == 2


def test_export_falls_back_once_from_a_periodic_save_cut_short(tmp_path, caplog):
    """A run killed at its time limit while writing ``net_g_<iter>.pth``: the save before it is exported; several
    runs are exported each alone, and one that cannot be read does not stop the others."""
    experiments = tmp_path / 'experiments'
    for run in ('cut_short', 'complete'):
        (experiments / run / 'models').mkdir(parents=True)
        for iteration in (500, 1000):
            torch.save({'params_ema': {'w': torch.full((1, ), float(iteration))}},
                       experiments / run / 'models' / f'net_g_{iteration}.pth')
    (experiments / 'cut_short' / 'models' / 'net_g_1500.pth').write_bytes(b'\x80\x02truncated')
    (experiments / 'finished_broken' / 'models').mkdir(parents=True)  # a run that ended: no fallback
    torch.save({'params_ema': {'w': torch.zeros(1)}}, experiments / 'finished_broken' / 'models' / 'net_g_500.pth')
    (experiments / 'finished_broken' / 'models' / 'net_g_latest.pth').write_bytes(b'broken')
    out = tmp_path / 'out'
    code = export_demo.main(['--experiments', str(experiments), '--out', str(out), '--run', 'cut_short',
                             'finished_broken', 'complete'])
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == ['complete.safetensors', 'cut_short.safetensors']
    assert read_state_dict(out / 'cut_short.safetensors')['w'].item() == 1000.0
    assert read_state_dict(out / 'complete.safetensors')['w'].item() == 1000.0
    assert 'exporting net_g_1000.pth instead' in caplog.text and 'finished_broken not exported' in caplog.text
    (experiments / 'only' / 'models').mkdir(parents=True)
    (experiments / 'only' / 'models' / 'net_g_100.pth').write_bytes(b'broken')  # nothing to fall back to
    assert export_demo.main(['--experiments', str(experiments), '--out', str(out), '--run', 'only']) == 2
    assert not (out / 'only.safetensors').exists()


def test_export_writes_nothing_when_a_stage_is_missing(tmp_path):
    runs = list(export_demo.DEMO_STAGES.values())
    models = tmp_path / 'experiments' / runs[0] / 'models'
    models.mkdir(parents=True)
    torch.save({'params_ema': {'w': torch.ones(2)}}, models / 'net_g_latest.pth')
    shipped = tmp_path / 'weights' / next(iter(export_demo.DEMO_STAGES))
    shipped.parent.mkdir()
    shipped.write_bytes(b'the shipped file')
    assert export_demo.main(['--experiments', str(tmp_path / 'experiments'), '--out', str(shipped.parent)]) == 2
    assert shipped.read_bytes() == b'the shipped file'


def test_a_rerun_replaces_the_earlier_demo_outputs_and_other_folders_are_refused(tmp_path):
    from lpnsr_arch.demo import DEMO_MARKER, clear_previous_run
    earlier = tmp_path / 'demo'
    (earlier / 'pairs' / 'lq').mkdir(parents=True)
    (earlier / 'pairs' / 'lq' / 'coffee.png').write_bytes(b'stale')  # would join the next run's table
    (earlier / 'quality.csv').write_text('old table')
    (earlier / 'quality.json').write_text(json.dumps({'meta': {'dataset': [
        f"skimage_demo={earlier / 'pairs' / 'gt'},{earlier / 'pairs' / 'lq'}"]}}))  # a demo run from before the marker
    (earlier / 'notes.txt').write_text('mine')
    clear_previous_run(earlier)
    assert sorted(p.name for p in earlier.iterdir()) == sorted([DEMO_MARKER, 'notes.txt'])
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'hr').mkdir()
    (other / 'hr' / 'keep.png').write_bytes(b'user data')
    with pytest.raises(FileExistsError, match='holds no earlier demo results'):
        clear_previous_run(other)
    (other / 'quality.csv').write_text('a bench.quality table')  # not enough to count as a demo folder
    with pytest.raises(FileExistsError, match='holds no earlier demo results'):
        clear_previous_run(other)
    assert (other / 'hr' / 'keep.png').read_bytes() == b'user data'
    clear_previous_run(tmp_path / 'new')
    assert (tmp_path / 'new' / DEMO_MARKER).is_file()


def test_an_unknown_photo_name_is_one_error_line_and_nothing_is_written(tmp_path, caplog):
    with pytest.raises(SystemExit, match='2'):
        demo.main(['--images', 'astronaut', 'nosuch', '--out', str(tmp_path / 'demo')])
    assert '--images: unknown image(s) nosuch; available:' in caplog.text
    assert not (tmp_path / 'demo').exists()


def test_the_demo_recipes_train_the_networks_the_shipped_options_load():
    import yaml

    from lpnsr_arch.weights import REPO_ROOT

    def load(relative):
        return yaml.safe_load((REPO_ROOT / relative).read_text(encoding='utf-8'))

    inference = load('options/demo/inference_lpnsr_demo.yml')
    recipes = {path.stem: load(path) for path in (REPO_ROOT / 'options' / 'demo_model').glob('*.yml')}
    runs = {recipe['name']: stem for stem, recipe in recipes.items()}
    for file_name, run in export_demo.DEMO_STAGES.items():
        assert run in runs, f'{file_name}: no recipe in options/demo_model names the run {run}'
        assert (REPO_ROOT / 'weights' / 'demo' / file_name).is_file(), file_name
    shipped = {name: recipes[runs[run]] for name, run in export_demo.DEMO_STAGES.items()}
    assert shipped['upsampler_rrdbnet.safetensors']['network_g'] == inference['network_upsampler']
    assert shipped['denoiser_resshift.safetensors']['network_g'] == inference['network_unet']
    noise_stage = shipped['noise_predictor_lpnsr.safetensors']
    assert noise_stage['network_g'] == inference['network_noise']
    for key in ('network_unet', 'network_upsampler', 'network_ae', 'diffusion'):
        assert noise_stage[key] == inference[key], key
    probe = recipes['probe_swinir_5_noise_predictor']  # the SwinIR probe fine-tunes the shipped networks
    assert probe['network_g'] == inference['network_noise'] and probe['network_unet'] == inference['network_unet']
    assert probe['network_upsampler'] == recipes['probe_swinir_4c_upsampler']['network_g']
    assert probe['path']['pretrain_network_g'] == inference['path']['pretrain_network_noise']
    assert probe['path']['pretrain_network_unet'] == inference['path']['pretrain_network_unet']
    for stem in ('probe_gpu_upsampler_l1', 'probe_gpu_upsampler_gan'):  # the GPU probes continue the shipped one
        gpu_probe = recipes[stem]
        assert gpu_probe['network_g'] == inference['network_upsampler'], stem
        assert gpu_probe['path']['pretrain_network_g'] == inference['path']['pretrain_network_upsampler'], stem
    l1_probe, gan_probe = recipes['probe_gpu_upsampler_l1'], recipes['probe_gpu_upsampler_gan']
    # the L1 probe is the shipped pre-upsampler's last recipe with the GPU run's settings; the GAN probe adds GAN terms
    assert differing_options(recipes['01b_upsampler_rrdbnet_finetune'], l1_probe) == {
        'name', 'path.pretrain_network_g', 'datasets.train.num_worker_per_gpu', 'datasets.train.batch_size_per_gpu',
        'train.ema_decay', 'train.optim_g.lr', 'train.scheduler.milestones', 'train.total_iter', 'val.val_freq',
        'logger.print_freq', 'logger.save_checkpoint_freq'}
    assert differing_options(l1_probe, gan_probe) == {
        'name', 'model_type', 'network_d', 'path.pretrain_network_d', 'train.optim_d', 'train.gan_opt',
        'train.net_d_iters', 'train.net_d_init_iters'}


def differing_options(first: dict, second: dict, prefix: str = '') -> set:
    """The dotted option paths whose values differ between two recipes (present in one only included)."""
    differing = set()
    for key in first.keys() | second.keys():
        path = f'{prefix}{key}'
        if isinstance(first.get(key), dict) and isinstance(second.get(key), dict):
            differing |= differing_options(first[key], second[key], f'{path}.')
        elif key not in first or key not in second or first[key] != second[key]:
            differing.add(path)
    return differing


def test_the_demo_runs_end_to_end_on_one_photo(tmp_path):
    """``make demo``'s own path, with the shipped model, on the smallest default photo: the saved output, the table
    (its LPNSR row scores that output) and the sheet; a second run into the same folder replaces the first."""
    out = tmp_path / 'demo'
    demo.main(['--out', str(out), '--images', 'chelsea', '--device', 'cpu'])
    sr = cv2.imread(str(out / 'sr' / 'chelsea_lpnsr.png'))
    assert sr.shape == (300, 448, 3)  # the LR is 75 x 112 (the GT's 451 columns floored to a multiple of 4)
    rows = {row['method']: row for row in json.loads((out / 'quality.json').read_text())['rows']}
    assert set(rows) == {'bicubic', 'rrdbnet', 'lpnsr'}
    assert rows['lpnsr']['images'] == 1 and 20 < rows['lpnsr']['psnr_y'] < 40
    assert (out / 'sheets' / 'chelsea_sheet.png').is_file()
    first = (out / 'sr' / 'chelsea_lpnsr.png').read_bytes()
    demo.main(['--out', str(out), '--images', 'chelsea', '--device', 'cpu'])
    assert (out / 'sr' / 'chelsea_lpnsr.png').read_bytes() == first, 'the same seed gives the same output'
    assert sorted(p.name for p in (out / 'sr').iterdir()) == ['chelsea_lpnsr.png']
