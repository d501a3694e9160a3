"""Data set classes on generated data through the real mmseg pipeline; configs; errors."""
import os.path as osp

import numpy as np
import pytest

from mfuser_tools import synthetic as S
from mfuser_tools.converters import CONVERTERS

SIZE = (96, 48)
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TEST_PIPELINE = [dict(type='LoadCheckedImageFromFile'), dict(type='LoadCheckedAnnotations'),
                 dict(type='PackSegInputs')]
TRAIN_PIPELINE = [dict(type='LoadCheckedImageFromFile'), dict(type='LoadCheckedAnnotations'),
                  dict(type='RandomResize', scale=(96, 48), ratio_range=(0.5, 2.0),
                       keep_ratio=True),
                  dict(type='RandomCrop', crop_size=(32, 32), cat_max_ratio=0.75),
                  dict(type='RandomFlip', prob=0.5), dict(type='PhotoMetricDistortion'),
                  dict(type='PackSegInputs')]


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    from mmengine.registry import init_default_scope

    import mfuser  # noqa: F401  (registers)
    init_default_scope('mmseg')
    root = tmp_path_factory.mktemp('synthetic')
    domains = ['gta', 'cityscapes', 'bdd100k', 'mapillary']
    try:
        import cv2  # noqa: F401
        domains.append('synthia')
    except ImportError:
        pass
    S.generate(str(root), domains, num_train=3, num_val=2, size=SIZE, verbose=False)
    for d in domains:
        if d in CONVERTERS:
            kw = dict(half_res=True) if d == 'mapillary' else {}
            assert not CONVERTERS[d](str(root / d), progress=False, **kw).failed
    return root


CASES = [
    ('GTAVDataset', 'gta', 'train', {}, 3),
    ('CityscapesDGDataset', 'cityscapes', 'val', {}, 2),
    ('BDD100KDGDataset', 'bdd100k', 'val', {}, 2),
    ('MapillaryDataset', 'mapillary', 'val', {}, 2),
    ('MapillaryDataset', 'mapillary', 'val', dict(half_res=True), 2),
    ('SYNTHIADataset', 'synthia', 'train', {}, 3),
]


@pytest.mark.parametrize('cls,domain,split,extra,n', CASES)
def test_loads_through_pipeline(data_root, cls, domain, split, extra, n):
    from mmseg.registry import DATASETS
    assert (data_root / domain).is_dir(), f'{domain} was not generated'
    ds = DATASETS.build(dict(type=cls, data_root=str(data_root / domain), split=split,
                             pipeline=TEST_PIPELINE, **extra))
    assert len(ds) == n
    assert ds.metainfo['classes'][0] == 'road' and len(ds.metainfo['classes']) == 19
    out = ds[0]
    seg = out['data_samples'].gt_sem_seg.data.numpy()[0]
    info = ds.get_data_info(0)
    assert info['domain'] == domain
    # the loaded label equals the generator's ground truth (half-res: nearest resize of it)
    rel = osp.relpath(info['img_path'], str(data_root / domain))
    idx = _index_of(domain, split, rel, n)
    exp = S.render_sample(domain, split, idx, size=SIZE)['train_ids']
    if extra.get('half_res'):
        assert seg.shape == (exp.shape[0] // 2, exp.shape[1] // 2)
    else:
        assert np.array_equal(seg, exp)
    assert out['inputs'].shape[0] == 3 and out['inputs'].shape[1:] == seg.shape


def _index_of(domain, split, rel_img, n):
    for i in range(n):
        s = S.render_sample(domain, split, i, size=SIZE)
        if osp.basename(s['img_path']) == osp.basename(rel_img):
            return i
    raise AssertionError(rel_img)


def test_train_pipeline_with_rcs(data_root, tmp_path):
    from mmseg.registry import DATASETS
    ds = DATASETS.build(dict(
        type='RareClassSampledDataset', min_pixels=20, temperature=0.1, min_crop_ratio=0.5,
        seed=0, cache_file=str(tmp_path / 'rcs.json'),
        dataset=dict(type='GTAVDataset', data_root=str(data_root / 'gta'),
                     pipeline=TRAIN_PIPELINE)))
    for _ in range(4):
        out = ds[0]
        assert max(out['inputs'].shape[1:]) <= 32
        assert out['data_samples'].gt_sem_seg.data.shape[1:] == out['inputs'].shape[1:]


def test_multi_domain_dataset_tags_samples(data_root):
    from mmseg.registry import DATASETS
    ds = DATASETS.build(dict(type='MultiDomainDataset', datasets=[
        dict(type='CityscapesDataset', data_root=str(data_root / 'cityscapes'),
             data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
             pipeline=TEST_PIPELINE),  # mmseg's own class, unchanged
        dict(type='BDD100KDGDataset', data_root=str(data_root / 'bdd100k'),
             pipeline=TEST_PIPELINE),
        dict(type='MapillaryDataset', data_root=str(data_root / 'mapillary'),
             pipeline=TEST_PIPELINE)]))
    assert ds.metainfo['domains'] == ('cityscapes', 'bdd100k', 'mapillary')
    assert len(ds) == 6
    assert [ds[i]['data_samples'].domain for i in range(6)] == \
        ['cityscapes'] * 2 + ['bdd100k'] * 2 + ['mapillary'] * 2


def test_missing_or_empty_root_errors(tmp_path, data_root):
    from mmseg.registry import DATASETS
    with pytest.raises(FileNotFoundError,
                       match=r'(?s)does not exist.*tools/dataset_converters/gta.py'):
        DATASETS.build(dict(type='GTAVDataset', data_root=str(tmp_path / 'gta')))
    (tmp_path / 'city' / 'leftImg8bit' / 'val').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r'(?s)no images.*cityscapes.py'):
        DATASETS.build(dict(type='CityscapesDGDataset', data_root=str(tmp_path / 'city')))
    # images present but labels not converted -> names the converter
    import shutil
    shutil.copytree(data_root / 'mapillary' / 'validation', tmp_path / 'm' / 'validation')
    with pytest.raises(FileNotFoundError, match=r'(?s)2 of 2 label files.*mapillary.py'):
        DATASETS.build(dict(type='MapillaryDataset', data_root=str(tmp_path / 'm')))


def test_configs_parse_and_demo_config_builds(data_root):
    from mmengine.config import Config
    from mmseg.registry import DATASETS
    base = osp.join(REPO, 'configs', '_base_', 'datasets')
    for name in ('dg_gta_to_cbm', 'dg_gta_to_cbm_rein', 'dg_cityscapes_to_bm',
                 'dg_cityscapes_to_bm_rein', 'dg_synthia_to_cbm'):
        cfg = Config.fromfile(osp.join(base, name + '.py'))
        assert cfg.val_evaluator.type == 'DGIoUMetric'
        assert cfg.val_dataloader.dataset.type == 'MultiDomainDataset'
    cfg = Config.fromfile(osp.join(base, 'dg_gta_to_cbm.py'))
    assert cfg.train_dataloader.dataset.type == 'RareClassSampledDataset'
    assert cfg.train_dataloader.dataset.min_pixels == 3000
    rein = Config.fromfile(osp.join(base, 'dg_gta_to_cbm_rein.py'))
    assert rein.val_dataloader.dataset.datasets[2].data_prefix.img_path == 'half/val_img'
    demo = Config.fromfile(osp.join(base, 'dg_synthetic.py'))
    val = demo.val_dataloader.dataset
    for d in val.datasets:
        d.data_root = d.data_root.replace('data/synthetic/', str(data_root) + '/')
    ds = DATASETS.build(val)
    assert len(ds) == 6 and ds[5]['data_samples'].domain == 'mapillary'
    tr = demo.train_dataloader.dataset
    tr.dataset.data_root = tr.dataset.data_root.replace('data/synthetic/', str(data_root) + '/')
    tr.cache_file = str(data_root / 'rcs_demo.json')
    out = DATASETS.build(tr)[0]
    assert out['inputs'].shape[1] <= 224
