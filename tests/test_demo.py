"""`make demo` pieces: the sample photos, the weights check, and the export of trained stages to safetensors."""
from __future__ import annotations

import json

import cv2
import pytest
import torch

from lpnsr_arch import demo, export_demo
from lpnsr_arch.weights import read_state_dict


def test_sample_photos_are_written_as_rgb_pngs(tmp_path):
    paths = demo.write_sample_photos(tmp_path, ['chelsea'])
    image = cv2.imread(str(paths[0]))
    assert image.shape == (300, 451, 3)
    with pytest.raises(KeyError, match='--images: unknown image.s. not_a_photo; available: astronaut, brick'):
        demo.write_sample_photos(tmp_path, ['not_a_photo'])
    camera = cv2.imread(str(demo.write_sample_photos(tmp_path, ['camera'])[0]), cv2.IMREAD_UNCHANGED)
    assert camera.shape == (512, 512, 3) and (camera[:, :, 0] == camera[:, :, 2]).all()  # a grey photo, as RGB


def test_missing_weights_name_the_files_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'upsampler_rrdbnet\.safetensors.*train_demo_model\.sh'):
        demo.check_weights(tmp_path)


def test_export_takes_the_ema_weights_of_each_stage(tmp_path):
    for index, run in enumerate(export_demo.DEMO_STAGES.values()):
        models = tmp_path / 'experiments' / run / 'models'
        models.mkdir(parents=True)
        torch.save({'params': {'w': torch.zeros(2)}, 'params_ema': {'w': torch.full((2, ), float(index))}},
                   models / 'net_g_latest.pth')
    written = export_demo.export_demo(experiments=tmp_path / 'experiments', out=tmp_path / 'weights')
    assert [p.name for p in written] == list(export_demo.DEMO_STAGES)
    for index, path in enumerate(written):
        assert torch.equal(read_state_dict(path)['w'], torch.full((2, ), float(index)))
    with pytest.raises(Exception, match='net_g_latest.pth'):
        export_demo.export_demo(experiments=tmp_path / 'nowhere', out=tmp_path / 'w2')


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
