"""Label converters on generated raw data: pixel-exact train IDs, idempotence, robustness."""
import hashlib
import os.path as osp

import numpy as np
import pytest
from PIL import Image
from shared_files import shared_path

from mfuser.datasets import label_maps as L
from mfuser_tools import converters as C
from mfuser_tools import synthetic as S

SIZE = (96, 48)


def _digest(paths):
    return {p: hashlib.md5(open(p, 'rb').read()).hexdigest() for p in paths}


def _read(p):
    return np.asarray(Image.open(p))


@pytest.fixture(scope='module')
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp('raw')
    S.generate(str(root), ['gta', 'cityscapes', 'mapillary'], num_train=3, num_val=2,
               size=SIZE, verbose=False)
    return root


# Cityscapes label id -> train id as written in shared/reference/README.md (the table the
# official pipeline's golden labels were made with), not taken from cityscapesscripts.
REFERENCE_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                       23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def test_cityscapes_label_table_converts_the_real_sample_to_the_official_golden_crop():
    """The real Cityscapes labelIds file converts to the official pipeline's golden crop."""
    ids = _read(shared_path('data', 'real', 'cityscapes', 'gtFine', 'train', 'aachen',
                            'aachen_000000_000019_gtFine_labelIds.png'))
    golden = np.load(shared_path('reference', 'mfuser_eva02_official_golden.npz'))
    np.testing.assert_array_equal(L.cityscapes_lut()[ids][256:768, 768:1280],
                                  golden['label_trainid_uint8'])


def test_label_tables_match_the_reference():
    lut = L.cityscapes_lut()
    for lid in range(256):
        assert lut[lid] == REFERENCE_TRAIN_IDS.get(lid, 255), lid
    assert L.mapillary_lut()[[13, 24, 2, 27, 55, 65, 23]].tolist() == [0, 0, 1, 10, 13, 255, 255]
    # every Cityscapes class is reachable from Mapillary, and names agree where 1:1
    assert sorted(set(L.MAPILLARY_TO_TRAIN_ID.values())) == list(range(19))
    names = L.MAPILLARY_V12_CLASSES
    assert (names[13], names[27], names[55], names[58]) == (
        'construction--flat--road', 'nature--sky', 'object--vehicle--car',
        'object--vehicle--on-rails')


def test_gta_pixelwise(raw):
    rep = C.convert_gta(str(raw / 'gta'), nproc=1, progress=False)
    assert (rep.converted, rep.skipped, rep.failed) == (3, 0, [])
    for i in range(3):
        s = S.render_sample('gta', 'train', i, size=SIZE)
        out = raw / 'gta' / 'labels' / f'{i + 1:05d}_labelTrainIds.png'
        assert np.array_equal(_read(out), s['train_ids'])
        assert 255 in s['train_ids'] or not np.isin(s['fine'], [21, 22, 23]).any()


def test_cityscapes_pixelwise_and_idempotent(raw):
    root = str(raw / 'cityscapes')
    srcs = [j[1] for j in C.cityscapes_jobs(root)]
    before = _digest(srcs)
    rep = C.convert_cityscapes(root, nproc=2, progress=False)
    assert (rep.converted, rep.failed) == (5, [])
    for split, n in (('train', 3), ('val', 2)):
        for i in range(n):
            s = S.render_sample('cityscapes', split, i, size=SIZE)
            out = osp.join(root, s['label_path'].replace('_labelIds', '_labelTrainIds'))
            assert np.array_equal(_read(out), s['train_ids'])
    rep2 = C.convert_cityscapes(root, nproc=1, progress=False)
    assert (rep2.converted, rep2.skipped) == (0, 5)
    assert _digest(srcs) == before  # sources untouched


def test_mapillary_pixelwise_and_half_res(raw):
    root = str(raw / 'mapillary')
    rep = C.convert_mapillary(root, nproc=1, progress=False, half_res=True)
    assert rep.converted == 5 * 3 and not rep.failed  # label, half label, half image
    for split, short, n in (('train', 'train', 3), ('val', 'val', 2)):
        for i in range(n):
            s = S.render_sample('mapillary', split, i, size=SIZE)
            name = osp.basename(s['label_path'])
            full = _read(osp.join(root, 'cityscapes_trainIdLabel', short, 'label', name))
            assert np.array_equal(full, s['train_ids'])
            half = _read(osp.join(root, 'half', f'{short}_label', name))
            img = Image.open(osp.join(root, 'half', f'{short}_img', name[:-4] + '.jpg'))
            h, w = s['train_ids'].shape
            assert half.shape == (h // 2, w // 2) and img.size == (w // 2, h // 2)
            assert set(np.unique(half)) <= set(np.unique(full))


def test_synthia_pixelwise(tmp_path):
    pytest.importorskip('cv2')
    S.generate(str(tmp_path), ['synthia'], num_train=2, size=SIZE, verbose=False)
    rep = C.convert_synthia(str(tmp_path / 'synthia'), progress=False)
    assert (rep.converted, rep.failed) == (2, [])
    for i in range(2):
        s = S.render_sample('synthia', 'train', i, size=SIZE)
        out = tmp_path / 'synthia' / 'GT' / 'LABELS' / f'{i:07d}_labelTrainIds.png'
        assert np.array_equal(_read(out), s['train_ids'])


def test_unreadable_files_are_reported_not_fatal(tmp_path, capsys):
    S.generate(str(tmp_path), ['gta'], num_train=2, size=SIZE, verbose=False)
    bad = tmp_path / 'gta' / 'labels' / '99999.png'
    bad.write_bytes(b'not a png')
    rep = C.convert_gta(str(tmp_path / 'gta'), nproc=2, progress=False)
    assert rep.converted == 2 and [p for p, _ in rep.failed] == [str(bad)]
    assert not (tmp_path / 'gta' / 'labels' / '99999_labelTrainIds.png').exists()
    assert 'FAILED' in rep.summary() and '99999.png' in rep.summary()
    # the command line reports and exits non-zero
    assert C.cli('gta', [str(tmp_path / 'gta'), '--no-progress', '--nproc', '1']) == 1
    out = capsys.readouterr().out
    assert '0 converted, 2 skipped' in out and 'FAILED' in out


def test_missing_root_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match='Cityscapes gtFine folder'):
        C.convert_cityscapes(str(tmp_path / 'nope'))
    assert C.cli('mapillary', [str(tmp_path / 'nope'), '--no-progress']) == 2
    assert 'ERROR' in capsys.readouterr().err


def test_refuses_to_overwrite_source(tmp_path):
    p = tmp_path / 'a.png'
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(p)
    with pytest.raises(ValueError, match='overwrite'):
        C.convert_label(str(p), str(p), 'cityscapes')
