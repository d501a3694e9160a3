"""Converters reject what they cannot convert correctly (issue 14, part 3).

Real Cityscapes / Mapillary / SYNTHIA files from ``../shared/data/real`` are copied into
``tmp_path`` and converted or damaged there; the shared folder is only read.
"""
from __future__ import annotations

import os
import os.path as osp
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from shared_files import shared_location
from tool_scripts import tool

from mfuser.datasets import label_maps as L
from mfuser_tools import converters as C

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
REAL = shared_location('data', 'real')  # not checked here: pytestmark below does
CITY_LABEL = 'gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png'
MAPILLARY_NAME = '__CRyFzoDOXn6unQ6a3DnQ'

pytestmark = pytest.mark.needs_shared('data', 'real')


def _tree(folder):
    return {osp.relpath(osp.join(d, f), folder): os.path.getsize(osp.join(d, f))
            for d, _, fs in os.walk(folder) for f in fs}


def _cityscapes(tmp_path):
    root = tmp_path / 'cityscapes'
    shutil.copytree(osp.join(REAL, 'cityscapes'), root)
    return root


# ----------------------------------------------------------------------------- no input
@pytest.mark.parametrize('name,make', [
    ('gta', lambda r: (r / 'labels').mkdir(parents=True)),
    ('synthia', lambda r: (r / 'GT' / 'LABELS').mkdir(parents=True)),
    ('mapillary', lambda r: (r / 'validation' / 'v1.2' / 'labels').mkdir(parents=True)),
    # a real Cityscapes val frame with colour ground truth only: no *_gtFine_labelIds.png
    ('cityscapes', lambda r: shutil.copytree(osp.join(REAL, 'cityscapes_val_color_only'), r)),
])
def test_no_input_files_is_an_error_saying_what_and_where(tmp_path, capsys, name, make):
    root = tmp_path / name
    make(root)
    before = _tree(root)
    assert C.cli(name, [str(root), '--no-progress', '--nproc', '1']) == 2
    err = capsys.readouterr().err
    pattern = {'gta': 'labels/*.png', 'synthia': 'GT/LABELS/*.png',
               'mapillary': 'validation/v1.2/labels/*.png',
               'cityscapes': 'gtFine/**/*_gtFine_labelIds.png'}[name]
    assert 'no ' in err and pattern in err and str(root) in err, err
    assert _tree(root) == before


# ----------------------------------------------------------------------------- SYNTHIA
def test_synthia_real_label_converts_and_colour_gt_is_refused(tmp_path, capsys):
    cv2 = pytest.importorskip('cv2')
    root = tmp_path / 'synthia'
    (root / 'GT' / 'LABELS').mkdir(parents=True)
    shutil.copy(osp.join(REAL, 'synthia', 'GT', 'LABELS', '000000.png'), root / 'GT' / 'LABELS')
    # the 8-bit colour ground truth put where the 16-bit labels belong
    shutil.copy(osp.join(REAL, 'synthia', 'GT', 'COLOR', '000000.png'),
                root / 'GT' / 'LABELS' / '000001.png')
    assert C.cli('synthia', [str(root), '--no-progress', '--nproc', '1']) == 1
    out = capsys.readouterr().out
    assert 'FAILED' in out and '000001.png' in out and 'GT/COLOR' in out and '16-bit' in out
    assert not (root / 'GT' / 'LABELS' / '000001_labelTrainIds.png').exists()
    # the real 16-bit label: class in R, converted with an independent table (same 100 %)
    raw = cv2.imread(osp.join(REAL, 'synthia', 'GT', 'LABELS', '000000.png'),
                     cv2.IMREAD_UNCHANGED)[..., 2]
    table = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11,
             17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18}
    expected = np.vectorize(lambda v: table.get(int(v), 255), otypes=[np.uint8])(raw)
    got = np.asarray(Image.open(root / 'GT' / 'LABELS' / '000000_labelTrainIds.png'))
    assert np.array_equal(got, expected)


# ----------------------------------------------------------------------------- Mapillary
def _mapillary(tmp_path, version_in_v12_folder):
    """The 100x100 real Mapillary crop in the Vistas layout; ``version_in_v12_folder``: which
    release's label file sits in ``validation/v1.2/labels``."""
    src = osp.join(REAL, 'mapillary_mmseg_pseudo')
    root = tmp_path / 'mapillary'
    (root / 'validation' / 'images').mkdir(parents=True)
    shutil.copy(osp.join(src, 'images', MAPILLARY_NAME + '.jpg'), root / 'validation' / 'images')
    for version in ('v1.2', 'v2.0'):
        (root / 'validation' / version / 'labels').mkdir(parents=True)
        shutil.copy(osp.join(src, version, MAPILLARY_NAME + '.png'),
                    root / 'validation' / version / 'labels')
    if version_in_v12_folder == 'v2.0':
        shutil.copy(osp.join(src, 'v2.0', MAPILLARY_NAME + '.png'),
                    root / 'validation' / 'v1.2' / 'labels')
    return root


def test_mapillary_v2_labels_are_refused_v12_converted(tmp_path, capsys):
    root = _mapillary(tmp_path, 'v2.0')
    before = _tree(root)
    assert C.cli('mapillary', [str(root), '--no-progress', '--nproc', '1']) == 2
    err = capsys.readouterr().err
    assert 'v2.0' in err and '124 classes' in err and MAPILLARY_NAME in err
    assert _tree(root) == before  # nothing written
    assert C.cli('mapillary', [str(root), '--no-progress', '--labels-subdir', 'v2.0/labels']) == 2
    assert 'v2.0 labels' in capsys.readouterr().err
    # the real v1.2 label converts, and agrees with a table keyed on mmseg's class names
    from mmseg.datasets import MapillaryDataset_v1, MapillaryDataset_v2
    for version, cls in ((C.MAPILLARY_V12_PALETTE_HEAD, MapillaryDataset_v1),
                         (C.MAPILLARY_V20_PALETTE_HEAD, MapillaryDataset_v2)):
        assert version == [c for rgb in cls.METAINFO['palette'][:4] for c in rgb]
    root = _mapillary(tmp_path / 'ok', 'v1.2')
    assert C.cli('mapillary', [str(root), '--no-progress', '--nproc', '1']) == 0
    src = np.asarray(Image.open(root / 'validation' / 'v1.2' / 'labels' / (MAPILLARY_NAME +
                                                                           '.png')))
    names = MapillaryDataset_v1.METAINFO['classes']
    by_name = {'Building': 2, 'Street Light': 255, 'Pole': 5}
    expected = np.vectorize(lambda v: by_name[names[v]], otypes=[np.uint8])(src)
    got = np.asarray(Image.open(root / 'cityscapes_trainIdLabel' / 'val' / 'label' /
                                (MAPILLARY_NAME + '.png')))
    assert np.array_equal(got, expected)


# ----------------------------------------------------------------------------- outputs
def test_empty_or_cut_off_outputs_are_redone_and_force_redoes_all(tmp_path, capsys):
    root = _cityscapes(tmp_path)
    src = root / CITY_LABEL
    source_bytes = src.read_bytes()
    assert C.cli('cityscapes', [str(root), '--no-progress']) == 0
    out = root / CITY_LABEL.replace('_labelIds', '_labelTrainIds')
    good = np.asarray(Image.open(out))
    assert np.array_equal(good, L.cityscapes_lut()[np.asarray(Image.open(src))])
    for damage in (b'', out.read_bytes()[:len(out.read_bytes()) // 2]):
        out.write_bytes(damage)  # empty, then cut off (as by a crash of an older version)
        capsys.readouterr()
        assert C.cli('cityscapes', [str(root), '--no-progress']) == 0
        assert '1 converted, 0 skipped' in capsys.readouterr().out
        assert np.array_equal(np.asarray(Image.open(out)), good)
    assert C.cli('cityscapes', [str(root), '--no-progress']) == 0
    assert '0 converted, 1 skipped' in capsys.readouterr().out
    assert C.cli('cityscapes', [str(root), '--no-progress', '--force']) == 0
    assert '1 converted, 0 skipped' in capsys.readouterr().out
    assert src.read_bytes() == source_bytes  # the source is never touched
    assert not [f for f in os.listdir(out.parent) if '.tmp' in f]


def test_ctrl_c_stops_a_parallel_conversion_quickly_without_partial_files(tmp_path):
    """SIGINT to the process group (what Ctrl-C in a terminal sends) during a 2-worker run."""
    root = tmp_path / 'gta'
    (root / 'labels').mkdir(parents=True)
    label = osp.join(REAL, 'cityscapes', CITY_LABEL)  # a real 2048x1024 label-ID map
    n = 400
    for i in range(n):
        os.link(label, root / 'labels' / f'{i:05d}.png') if i else shutil.copy(
            label, root / 'labels' / f'{i:05d}.png')
    proc = subprocess.Popen(
        [sys.executable, osp.join(REPO, 'tools', 'dataset_converters', 'gta.py'), str(root),
         '--nproc', '2', '--no-progress'], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
        env=os.environ)
    outputs = lambda: [f for f in os.listdir(root / 'labels') if 'TrainIds' in f]  # noqa: E731
    try:
        while len(outputs()) < 4 and proc.poll() is None:
            try:
                proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        assert proc.poll() is None, 'the conversion finished before it could be interrupted'
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)  # a hang fails here
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert 'interrupted' in err and 'Traceback' not in err and len(err.splitlines()) <= 3, err
    done = outputs()
    assert 0 < len(done) < n
    assert not [f for f in os.listdir(root / 'labels') if '.tmp' in f], 'partial files left'
    lut = L.cityscapes_lut()
    expected = lut[np.asarray(Image.open(label))]
    for f in done:  # every output that exists is complete and right
        assert np.array_equal(np.asarray(Image.open(root / 'labels' / f)), expected)


def test_make_synthetic_data_rejects_impossible_arguments(capsys):
    parse_args = tool('make_synthetic_data').parse_args
    for argv, needle in ((['--num-train', '0'], '--num-train must be at least 1, got 0'),
                         (['--num-val', '-1'], '--num-val must be at least 1'),
                         (['--nproc', '0'], '--nproc must be at least 1'),
                         (['--size', '8', '4'], '--size must be at least')):
        with pytest.raises(SystemExit) as info:
            parse_args(argv)
        assert info.value.code == 2 and needle in capsys.readouterr().err
    assert parse_args(['--num-train', '1', '--num-val', '1']).num_train == 1
