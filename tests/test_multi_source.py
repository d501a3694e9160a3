"""Multi-source training (issue 21): rare-class sampling over the union of GTAV and SYNTHIA,
statistics per source (own label map, own cache), every source drawn, each through its own
pipeline."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mfuser.datasets.rare_class_sampling import rcs_class_probabilities
from mfuser_tools import synthetic as S
from mfuser_tools.converters import CONVERTERS

SIZE = (96, 48)
SYNTHIA_ABSENT = (S.TERRAIN, S.TRUCK, S.TRAIN)


@pytest.fixture(autouse=True)
def _scope():
    from mmengine.registry import init_default_scope

    import mfuser  # noqa: F401  (registers)
    init_default_scope('mmseg')


@pytest.fixture(scope='module')
def sources(tmp_path_factory):
    pytest.importorskip('cv2')  # SYNTHIA's 16-bit labels
    root = tmp_path_factory.mktemp('synthetic')
    S.generate(str(root), ['gta', 'synthia'], num_train=6, size=SIZE, verbose=False)
    for d in ('gta', 'synthia'):
        assert not CONVERTERS[d](str(root / d), progress=False).failed
    return root


def _pipeline(size):
    return [dict(type='LoadCheckedImageFromFile'), dict(type='LoadCheckedAnnotations'),
            dict(type='Resize', scale=size, keep_ratio=False), dict(type='PackSegInputs')]


def _multi(root, tmp_path, **kw):
    from mmseg.registry import DATASETS
    return DATASETS.build(dict(
        type='MultiSourceRareClassDataset', sources=['gta', 'synthia'], min_pixels=20,
        temperature=kw.pop('temperature', 0.05), min_crop_ratio=0, seed=kw.pop('seed', 0),
        cache_files=[str(tmp_path / 'gta.json'), str(tmp_path / 'synthia.json')],
        datasets=[dict(type='GTAVDataset', data_root=str(root / 'gta'),
                       pipeline=_pipeline((64, 32))),
                  dict(type='SYNTHIADataset', data_root=str(root / 'synthia'),
                       pipeline=_pipeline((40, 20)))], **kw))


def _counts(label_paths):
    return np.stack([np.bincount(np.asarray(Image.open(p)).ravel(), minlength=256)[:19]
                     for p in label_paths])


def test_statistics_per_source_and_union_probabilities(sources, tmp_path):
    ds = _multi(sources, tmp_path)
    assert ds.metainfo['sources'] == ('gta', 'synthia') and len(ds) == 12
    for k, name in enumerate(('gta', 'synthia')):
        s = ds.samplers[k]
        paths = [s.get_data_info(i)['seg_map_path'] for i in range(len(s))]
        assert all(f'/{name}/' in p for p in paths)
        assert np.array_equal(s.class_stats, _counts(paths))  # its own files only
        cache = json.loads((tmp_path / f'{name}.json').read_text())  # its own cache
        assert cache['files'] == paths
    assert not ds.samplers[1].class_stats[:, list(SYNTHIA_ABSENT)].any()
    union = ds.samplers[0].class_pixels + ds.samplers[1].class_pixels
    assert np.array_equal(ds.class_pixels, union)
    probs = rcs_class_probabilities(union, 0.05)[ds.classes]
    assert np.allclose(ds.class_probs, probs / probs.sum())
    # a class's pool holds the images of every source with > min_pixels of it
    for c in ds.classes:
        pool = {(int(k), int(i)) for k, i in ds.samples_with_class[c]}
        expected = {(k, int(i)) for k in (0, 1)
                    for i in np.flatnonzero(ds.samplers[k].class_stats[:, c] > 20)}
        assert pool == expected and pool


def test_every_source_is_drawn_through_its_own_pipeline(sources, tmp_path):
    ds = _multi(sources, tmp_path, seed=1)
    draws = [ds.choose() for _ in range(2000)]
    drawn = np.bincount([k for _, k, _ in draws], minlength=2)
    assert drawn.min() > 200, drawn  # both sources are drawn
    for c, k, i in draws:
        assert ds.samplers[k].class_stats[i, c] > 20  # the image holds the drawn class
        if c in SYNTHIA_ABSENT:
            assert k == 0  # only GTAV has terrain / truck / train
    classes = np.bincount([c for c, _, _ in draws], minlength=19)[ds.classes] / len(draws)
    assert np.allclose(classes, ds.class_probs, atol=0.04)
    # each sample goes through its source's pipeline (GTAV 64x32, SYNTHIA 40x20 here)
    seen = set()
    for _ in range(40):
        out = ds[0]
        c, name, i = ds.last_choice
        seen.add(name)
        assert tuple(out['inputs'].shape[1:]) == ((32, 64) if name == 'gta' else (20, 40))
        assert name in out['data_samples'].img_path
    assert seen == {'gta', 'synthia'}
    # seeded: a new set with the same seed draws the same again
    assert _multi(sources, tmp_path, seed=1).choose() == draws[0]


class _Toy:
    """A source whose metainfo carries a label map (source id 1 -> class 2)."""

    def __init__(self, paths, label_map=None):
        self.paths = paths
        self.metainfo = dict(classes=('a', 'b', 'c'), label_map=label_map)

    def __len__(self):
        return len(self.paths)

    def get_data_info(self, i):
        return dict(seg_map_path=self.paths[i])


def test_each_source_counts_through_its_own_label_map(tmp_path):
    from mfuser.datasets import MultiSourceRareClassDataset
    paths = []
    for i in range(2):
        lab = np.zeros((10, 10), np.uint8)
        lab[:, 5:] = 1
        p = tmp_path / f'{i}.png'
        Image.fromarray(lab).save(p)
        paths.append(str(p))
    ds = MultiSourceRareClassDataset(
        [_Toy(paths[:1]), _Toy(paths[1:], label_map={1: 2})], sources=['plain', 'mapped'],
        min_pixels=10, cache_files=[str(tmp_path / 'a.json'), str(tmp_path / 'b.json')])
    assert ds.samplers[0].class_stats.tolist() == [[50, 50, 0]]
    assert ds.samplers[1].class_stats.tolist() == [[50, 0, 50]]
    assert ds.class_pixels.tolist() == [100, 50, 50]
    assert {int(k) for k, _ in ds.samples_with_class[2]} == {1}
    with pytest.raises(ValueError, match='one unique name per source'):
        MultiSourceRareClassDataset([_Toy(paths), _Toy(paths)], sources=['x', 'x'])
    other = _Toy(paths)
    other.metainfo = dict(classes=('a', 'b'))
    with pytest.raises(ValueError, match='share the class list'):
        MultiSourceRareClassDataset([_Toy(paths), other], sources=['x', 'y'])
