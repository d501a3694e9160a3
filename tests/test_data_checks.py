"""Labels must be what they claim, or loading stops naming the file (issue 14, part 2).

Real BDD100K / Cityscapes files from ``../shared/data/real`` are copied into ``tmp_path``
and damaged there (the shared folder is only read).
"""
from __future__ import annotations

import json
import os
import os.path as osp
import shutil

import numpy as np
import pytest
from PIL import Image
from shared_files import shared_location

REAL = shared_location('data', 'real')  # not checked here: pytestmark below does
BDD = osp.join(REAL, 'bdd100k')
CITY = osp.join(REAL, 'cityscapes')
TEST_PIPELINE = [dict(type='LoadCheckedImageFromFile'),
                 dict(type='Resize', scale=(640, 360), keep_ratio=True),
                 dict(type='LoadCheckedAnnotations'), dict(type='PackSegInputs')]
TRAIN_PIPELINE = [dict(type='LoadCheckedImageFromFile'), dict(type='LoadCheckedAnnotations'),
                  dict(type='RandomResize', scale=(640, 360), ratio_range=(0.5, 1.0),
                       keep_ratio=True),
                  dict(type='RandomCrop', crop_size=(128, 128), cat_max_ratio=0.75),
                  dict(type='PackSegInputs')]

pytestmark = pytest.mark.needs_shared('data', 'real')


@pytest.fixture(autouse=True)
def _scope():
    from mmengine.registry import init_default_scope

    import mfuser  # noqa: F401  (registers)
    init_default_scope('mmseg')


@pytest.fixture
def bdd(tmp_path):
    """A copy of the real BDD100K samples (2 train + 2 val images with their masks)."""
    root = tmp_path / 'bdd100k'
    shutil.copytree(BDD, root, ignore=shutil.ignore_patterns('colormaps'))
    return root


def _build(cls, root, split, pipeline, **kw):
    from mmseg.registry import DATASETS
    return DATASETS.build(dict(type=cls, data_root=str(root), split=split, pipeline=pipeline,
                               **kw))


def _mask(root, split, i=0):
    return sorted((root / 'labels' / 'sem_seg' / 'masks' / split).glob('*.png'))[i]


@pytest.mark.parametrize('split,pipeline', [('val', TEST_PIPELINE), ('train', TRAIN_PIPELINE)])
def test_value_200_in_a_bdd100k_mask_is_an_error(bdd, split, pipeline):
    from mfuser.datasets import DataFileError
    good = _build('BDD100KDGDataset', bdd, split, pipeline)
    good[0], good[1]  # the released masks load
    mask = _mask(bdd, split, 1)
    arr = np.array(Image.open(mask))
    arr[100:110, 200:220] = 200
    Image.fromarray(arr).save(mask)
    ds = _build('BDD100KDGDataset', bdd, split, pipeline)
    with pytest.raises(DataFileError) as info:
        ds[1]
    msg = str(info.value)
    assert str(mask) in msg and 'BDD100K' in msg and 'value 200 is neither a class id (0-18)' in msg
    assert '200 pixels' in msg and "invalid_labels='ignore'" in msg
    # on request such pixels become ignore instead
    ds = _build('BDD100KDGDataset', bdd, split, TEST_PIPELINE, invalid_labels='ignore')
    seg = ds[1]['data_samples'].gt_sem_seg.data.numpy()[0]
    assert seg[105, 210] == 255 and 200 not in seg
    assert np.array_equal(seg[arr != 200], arr[arr != 200])  # everything else as released


def test_16_bit_label_values_are_not_wrapped(bdd):
    from mfuser.datasets import DataFileError
    mask = _mask(bdd, 'val')
    arr = np.array(Image.open(mask)).astype(np.uint16)
    arr[:5, :5] = 256 + 13  # would become 13 (car) modulo 256
    mask.unlink()
    Image.fromarray(arr).save(mask)  # mode I;16
    ds = _build('BDD100KDGDataset', bdd, 'val', TEST_PIPELINE)
    with pytest.raises(DataFileError, match=r'values outside 0-255.*269 \(25 pixels; not '
                                            r'wrapped modulo 256\)'):
        ds[0]
    ds = _build('BDD100KDGDataset', bdd, 'val', TEST_PIPELINE, invalid_labels='ignore')
    seg = ds[0]['data_samples'].gt_sem_seg.data.numpy()[0]
    assert (seg[:5, :5] == 255).all()


@pytest.mark.parametrize('split,pipeline', [('val', TEST_PIPELINE), ('train', TRAIN_PIPELINE)])
def test_label_of_another_size_names_both_files(bdd, split, pipeline):
    from mfuser.datasets import DataFileError
    mask = _mask(bdd, split)
    Image.open(mask).resize((640, 360), Image.NEAREST).save(mask)  # half size, same aspect
    ds = _build('BDD100KDGDataset', bdd, split, pipeline)
    with pytest.raises(DataFileError) as info:
        ds[0]
    msg = str(info.value)
    img = ds.get_data_info(0)['img_path']
    assert str(mask) in msg and img in msg
    assert '640x360' in msg and '1280x720' in msg


def test_plain_mmcv_loaders_run_unchecked_and_are_named_once(bdd, monkeypatch):
    """No class swapping: mmcv's / mmseg's own loaders in a pipeline load as they always do
    (value 200 passes), and the data set names each once with the checked loader to use."""
    from mfuser.datasets import base
    logged = []
    monkeypatch.setattr(base, 'print_log', lambda msg, **kw: logged.append(msg))
    monkeypatch.setattr(base, '_WARNED_UNCHECKED', set())
    plain = [dict(t, type=t['type'].replace('LoadChecked', 'Load')) for t in TEST_PIPELINE]
    mask = _mask(bdd, 'val', 1)
    arr = np.array(Image.open(mask))
    arr[100:110, 200:220] = 200
    Image.fromarray(arr).save(mask)
    ds = _build('BDD100KDGDataset', bdd, 'val', plain)
    _build('BDD100KDGDataset', bdd, 'val', plain)  # warned once per data set and loader
    assert len(logged) == 2 and all(m.startswith('BDD100K: ') for m in logged)
    assert 'LoadImageFromFile' in logged[0] and "dict(type='LoadCheckedImageFromFile')" in logged[0]
    assert 'LoadAnnotations' in logged[1] and "dict(type='LoadCheckedAnnotations')" in logged[1]
    seg = ds[1]['data_samples'].gt_sem_seg.data.numpy()[0]
    assert seg[105, 210] == 200
    # a setting given in the pipeline wins over the data set's
    mine = [dict(t, invalid_labels='ignore') if t['type'] == 'LoadCheckedAnnotations' else t
            for t in TEST_PIPELINE]
    seg = _build('BDD100KDGDataset', bdd, 'val', mine)[1]['data_samples'].gt_sem_seg.data
    assert seg[0, 105, 210] == 255 and len(logged) == 2


def test_truncated_image_and_label_are_named(bdd):
    from mfuser.datasets import DataFileError
    img = sorted((bdd / 'images' / '10k' / 'val').glob('*.jpg'))[0]
    data = img.read_bytes()
    img.write_bytes(data[:len(data) // 2])  # OpenCV would decode the top half silently
    ds = _build('BDD100KDGDataset', bdd, 'val', TEST_PIPELINE)
    with pytest.raises(DataFileError, match=r'BDD100K: cannot read image .*truncated') as info:
        ds[0]
    assert str(img) in str(info.value)
    img.write_bytes(data)
    mask = _mask(bdd, 'val')
    mask.write_bytes(mask.read_bytes()[:3000])
    with pytest.raises(DataFileError, match='BDD100K: cannot read label') as info:
        ds[0]
    assert str(mask) in str(info.value)
    mask.write_bytes(b'')
    with pytest.raises(DataFileError, match='empty'):
        ds[0]


def test_truncated_cityscapes_png_is_named(tmp_path):
    from mfuser.datasets import DataFileError
    from mfuser_tools.converters import convert_cityscapes
    root = tmp_path / 'cityscapes'
    shutil.copytree(CITY, root)
    assert not convert_cityscapes(str(root), progress=False).failed
    ds = _build('CityscapesDGDataset', root, 'train', TEST_PIPELINE)
    seg = ds[0]['data_samples'].gt_sem_seg.data.numpy()[0]
    assert seg.shape == (1024, 2048) and set(np.unique(seg)) <= set(range(19)) | {255}
    png = next((root / 'leftImg8bit' / 'train' / 'aachen').glob('*.png'))
    png.write_bytes(png.read_bytes()[:-50000])
    with pytest.raises(DataFileError, match=r'Cityscapes: cannot read image .*aachen_000000'):
        ds[0]


# --------------------------------------------------------------------------- RCS cache
def _rcs(root, **kw):
    from mfuser.datasets import RareClassSampledDataset
    return RareClassSampledDataset(
        dict(type='BDD100KDGDataset', data_root=str(root), split='train',
             pipeline=TEST_PIPELINE), min_pixels=100, min_crop_ratio=0, seed=0, **kw)


def _files(folder):
    return sorted(osp.relpath(osp.join(d, f), folder) for d, _, fs in os.walk(folder)
                  for f in fs)


def test_rcs_cache_lives_outside_the_data_root_and_follows_the_labels(bdd, tmp_path,
                                                                      monkeypatch):
    cache_dir = tmp_path / 'cache'
    monkeypatch.setenv('MFUSER_RCS_CACHE', str(cache_dir))
    before = _files(bdd)
    ds = _rcs(bdd)
    assert _files(bdd) == before, 'nothing may be written into the data root'
    assert osp.dirname(ds.cache_path) == str(cache_dir) and osp.isfile(ds.cache_path)
    first = ds.class_stats.copy()
    mask = _mask(bdd, 'train', 0)
    arr = np.array(Image.open(mask))
    assert first[0, 17] == (arr == 17).sum() == 0  # no motorcycle in this frame
    # the label changes (new content, new size and time stamp): the statistics follow
    arr[:50, :50] = 17
    Image.fromarray(arr).save(mask)
    os.utime(mask, ns=(os.stat(mask).st_atime_ns, os.stat(mask).st_mtime_ns + 10**9))
    ds2 = _rcs(bdd)
    assert ds2.cache_path == ds.cache_path and ds2.class_stats[0, 17] == 2500
    assert np.array_equal(ds2.class_stats[1], first[1])
    # a damaged cache file is rebuilt, not a crash
    with open(ds.cache_path, 'w') as f:
        f.write('{"version": 2, "counts": [1, 2')
    ds3 = _rcs(bdd)
    assert np.array_equal(ds3.class_stats, ds2.class_stats)
    assert json.load(open(ds.cache_path))['counts'] == ds2.class_stats.tolist()


def test_rcs_names_an_unreadable_label(bdd, tmp_path):
    from mfuser.datasets import DataFileError
    mask = _mask(bdd, 'train', 1)
    mask.write_bytes(b'\x89PNG\r\n\x1a\n broken')
    with pytest.raises(DataFileError, match=str(mask)):
        _rcs(bdd, cache_file=str(tmp_path / 'c.json'))
