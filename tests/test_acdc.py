"""ACDC (issue 21): loading the shipped layout (generated files), its loading checks,
per-condition evaluation (mean over the conditions, pooled 'all', source domain aside) and the
test-server submission writer (ids, names, folders, zip)."""
from __future__ import annotations

import json
import os.path as osp
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from mfuser_tools import synthetic as S

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SIZE = (96, 48)
CONDITIONS = ('fog', 'night', 'rain', 'snow')
TEST_PIPELINE = [dict(type='LoadCheckedImageFromFile'), dict(type='LoadCheckedAnnotations'),
                 dict(type='PackSegInputs')]
IMAGE_PIPELINE = [dict(type='LoadCheckedImageFromFile'), dict(type='PackSegInputs')]


@pytest.fixture(autouse=True)
def _scope():
    from mmengine.registry import init_default_scope

    import mfuser  # noqa: F401  (registers)
    init_default_scope('mmseg')


@pytest.fixture(scope='module')
def acdc(tmp_path_factory):
    """Generated ACDC: per condition 1 train, 2 val, 2 test images (test: no labels)."""
    root = tmp_path_factory.mktemp('synthetic') / 'acdc'
    counts = S.generate(str(root.parent), ['acdc'], num_train=1, num_val=2, size=SIZE,
                        verbose=False)
    assert counts == {'acdc': {'train': 4, 'val': 8, 'test': 8}}
    return root


def _build(root, condition, split, pipeline=TEST_PIPELINE, **kw):
    from mmseg.registry import DATASETS
    return DATASETS.build(dict(type='ACDCDataset', data_root=str(root), condition=condition,
                               split=split, pipeline=pipeline, **kw))


def test_generator_writes_the_shipped_layout(acdc):
    for cond in CONDITIONS:
        imgs = sorted((acdc / 'rgb_anon' / cond / 'val').glob('*/*_rgb_anon.png'))
        labels = sorted((acdc / 'gt' / cond / 'val').glob('*/*_gt_labelTrainIds.png'))
        assert len(imgs) == len(labels) == 2
        for img, lab in zip(imgs, labels):
            assert img.parent.name == lab.parent.name  # the sequence folder
            assert img.name.replace('_rgb_anon', '_gt_labelTrainIds') == lab.name
            assert img.name.startswith(img.parent.name + '_frame_')
        assert len(list((acdc / 'rgb_anon' / cond / 'test').glob('*/*_rgb_anon.png'))) == 2
    assert not (acdc / 'gt' / 'fog' / 'test').exists()


def test_conditions_have_their_own_look():
    """Same scene in each condition: labels equal, pixels differ (night darkest)."""
    means = {}
    for i, cond in enumerate(CONDITIONS):
        s = S.render_sample('acdc', 'val', i, size=SIZE)
        assert S.acdc_condition(i) == cond and f'/{cond}/' in '/' + s['img_path']
        means[cond] = s['img'].mean()
    assert means['night'] < min(v for k, v in means.items() if k != 'night') - 20


@pytest.mark.parametrize('cond', CONDITIONS)
def test_loads_each_condition_with_the_generated_labels(acdc, cond):
    ds = _build(acdc, cond, 'val')
    assert len(ds) == 2 and ds.domain == f'acdc_{cond}'
    assert len(ds.metainfo['classes']) == 19
    for i in range(2):
        info = ds.get_data_info(i)
        assert info['domain'] == f'acdc_{cond}'
        out = ds[i]
        seg = out['data_samples'].gt_sem_seg.data.numpy()[0]
        # the generator's sample of this file
        k = next(k for k in range(8) if osp.basename(S.render_sample(
            'acdc', 'val', k, size=SIZE)['img_path']) == osp.basename(info['img_path']))
        assert np.array_equal(seg, S.render_sample('acdc', 'val', k, size=SIZE)['train_ids'])
        assert out['inputs'].shape[1:] == seg.shape


def test_test_split_has_no_labels(acdc):
    ds = _build(acdc, 'night', 'test', pipeline=IMAGE_PIPELINE)
    assert len(ds) == 2 and 'seg_map_path' not in ds.get_data_info(0)
    assert ds[0]['inputs'].shape[1:] == (SIZE[1], SIZE[0])
    with pytest.raises(ValueError, match='has no labels.*LoadAnnotations'):
        _build(acdc, 'night', 'test')
    with pytest.raises(ValueError, match='condition must be one of'):
        _build(acdc, 'haze', 'val')


def test_missing_root_and_labels_are_errors(acdc, tmp_path):
    with pytest.raises(FileNotFoundError, match=r'(?s)ACDC image folder .*rgb_anon/fog/val'):
        _build(tmp_path / 'nowhere', 'fog', 'val')
    import shutil
    shutil.copytree(acdc / 'rgb_anon', tmp_path / 'a' / 'rgb_anon')
    with pytest.raises(FileNotFoundError, match=r'2 of 2 label files are missing'):
        _build(tmp_path / 'a', 'rain', 'val')


@pytest.fixture
def acdc_copy(acdc, tmp_path):
    import shutil
    shutil.copytree(acdc, tmp_path / 'acdc')
    return tmp_path / 'acdc'


def _first_label(root, cond='snow'):
    return sorted((root / 'gt' / cond / 'val').glob('*/*_gt_labelTrainIds.png'))[0]


def test_bad_label_value_names_the_file(acdc_copy):
    from mfuser.datasets import DataFileError
    path = _first_label(acdc_copy)
    lab = np.asarray(Image.open(path)).copy()
    lab[0, :3] = 200
    Image.fromarray(lab).save(path)
    ds = _build(acdc_copy, 'snow', 'val')
    with pytest.raises(DataFileError, match=rf'ACDC: label {path}: value 200 is neither'):
        ds[0]
    # invalid_labels='ignore' treats them as ignored
    seg = _build(acdc_copy, 'snow', 'val', invalid_labels='ignore')[0][
        'data_samples'].gt_sem_seg.data.numpy()[0]
    assert (seg[0, :3] == 255).all()


def test_label_of_another_size_and_truncated_files_name_the_file(acdc_copy):
    from mfuser.datasets import DataFileError
    path = _first_label(acdc_copy)
    Image.fromarray(np.zeros((SIZE[1] // 2, SIZE[0] // 2), np.uint8)).save(path)
    with pytest.raises(DataFileError, match=rf'label {path}: its size 48x24 .*differs'):
        _build(acdc_copy, 'snow', 'val')[0]
    img = sorted((acdc_copy / 'rgb_anon' / 'fog' / 'val').glob('*/*.png'))[0]
    img.write_bytes(img.read_bytes()[:200])
    with pytest.raises(DataFileError, match=rf'ACDC: cannot read image {img}: .*truncated'):
        _build(acdc_copy, 'fog', 'val')[0]


# ----------------------------------------------------------------- per-condition evaluation
def _cityscapes_and_acdc(acdc):
    """The dg_cityscapes_to_acdc validation set on generated data."""
    from mmengine.config import Config
    from mmseg.registry import DATASETS
    cfg = Config.fromfile(osp.join(REPO, 'configs', '_base_', 'datasets',
                                   'dg_cityscapes_to_acdc.py'))
    val = cfg.val_dataloader.dataset
    for d in val.datasets[1:]:
        d.data_root = str(acdc)
        d.pipeline = TEST_PIPELINE
    val.datasets = val.datasets[1:]  # the ACDC conditions (Cityscapes is added by hand below)
    val.domains = val.domains[1:]
    return DATASETS.build(val), cfg


def test_per_condition_evaluation_mean_and_pooled(acdc, tmp_path):
    """Predictions = ground truth with a corrupted half in 'night': night loses, the others
    are perfect; the mean is over the four conditions only (not the source domain), and
    'acdc_all' equals the IoU of the four splits' pixels counted together."""
    from mmseg.registry import METRICS
    ds, cfg = _cityscapes_and_acdc(acdc)
    assert ds.metainfo['domains'] == ('acdc_fog', 'acdc_night', 'acdc_rain', 'acdc_snow')
    metric = METRICS.build(dict(cfg.val_evaluator, output_file=str(tmp_path / 'r.json')))
    metric.dataset_meta = dict(ds.metainfo, domains=('cityscapes', ) + ds.metainfo['domains'])
    preds, gts = {}, {}
    for i in range(len(ds)):
        sample = ds[i]['data_samples']
        gt = sample.gt_sem_seg.data
        pred = gt.clone()
        if sample.domain == 'acdc_night':
            pred[..., : gt.shape[-1] // 2] = 10  # sky on the left half
        pred[pred == 255] = 0
        preds.setdefault(sample.domain, []).append(pred[0].numpy())
        gts.setdefault(sample.domain, []).append(gt[0].numpy())
        metric.process({}, [dict(pred_sem_seg=dict(data=pred), gt_sem_seg=dict(data=gt),
                                 img_path=sample.img_path, domain=sample.domain)])
    # the source domain: Cityscapes val, all wrong
    city_gt = torch.zeros(1, 4, 4, dtype=torch.uint8)
    metric.process({}, [dict(pred_sem_seg=dict(data=city_gt + 1), gt_sem_seg=dict(data=city_gt),
                             img_path='c.png', domain='cityscapes')])
    res = metric.evaluate(len(ds) + 1)

    def miou(ps, gs):
        p, g = np.concatenate([x.ravel() for x in ps]), np.concatenate([x.ravel() for x in gs])
        keep = g != 255
        p, g = p[keep], g[keep]
        ious = [((p == c) & (g == c)).sum() / ((p == c) | (g == c)).sum()
                for c in range(19) if ((p == c) | (g == c)).any()]
        return 100 * np.mean(ious)

    for cond in CONDITIONS:
        exp = miou(preds[f'acdc_{cond}'], gts[f'acdc_{cond}'])
        assert res[f'acdc_{cond}/mIoU'] == pytest.approx(exp, abs=0.01)
    assert res['acdc_fog/mIoU'] == 100 and res['acdc_night/mIoU'] < 90
    assert res['cityscapes/mIoU'] == 0
    exp_mean = np.mean([res[f'acdc_{c}/mIoU'] for c in CONDITIONS])
    assert res['mean/mIoU'] == pytest.approx(exp_mean, abs=0.02) and res['mIoU'] == res[
        'mean/mIoU']
    all_p = sum((preds[f'acdc_{c}'] for c in CONDITIONS), [])
    all_g = sum((gts[f'acdc_{c}'] for c in CONDITIONS), [])
    assert res['acdc_all/mIoU'] == pytest.approx(miou(all_p, all_g), abs=0.01)
    rep = json.loads((tmp_path / 'r.json').read_text())
    assert rep['mean_over'] == ['acdc_fog', 'acdc_night', 'acdc_rain', 'acdc_snow']
    assert rep['pooled'] == {'acdc_all': rep['mean_over']}
    assert rep['domains']['acdc_all']['num_samples'] == 8
    assert list(rep['domains'])[:2] == ['cityscapes', 'acdc_fog']
    assert rep['protocol'].startswith('tqdm/MFuser') and '1920x1080' in rep['protocol']


# ----------------------------------------------------------------- submission writer
def _sample(path, pred, ori=None):
    t = torch.as_tensor(pred)[None]
    return dict(img_path=str(path), pred_sem_seg=dict(data=t),
                ori_shape=ori or tuple(pred.shape))


def test_submission_writer_ids_names_folders_and_zip(acdc, tmp_path):
    from mfuser.evaluation import ACDCSubmissionWriter
    from mfuser.evaluation.acdc_submission import train_id_to_label_id_lut
    images = sorted((acdc / 'rgb_anon').glob('*/test/*/*_rgb_anon.png'))
    assert len(images) == 8
    pred = np.arange(SIZE[0] * SIZE[1]).reshape(SIZE[1], SIZE[0]) % 19
    pred[0, 0] = 255
    out = {}
    for label_ids in (False, True):
        w = ACDCSubmissionWriter(output_dir=str(tmp_path / f'sub{label_ids}'),
                                 label_ids=label_ids)
        w.dataset_meta = dict(classes=tuple(range(19)))
        w.process({}, [_sample(p, pred) for p in images])
        w.evaluate(len(images))
        out[label_ids] = tmp_path / f'sub{label_ids}'
    rels = sorted(str(p.relative_to(acdc / 'rgb_anon')) for p in images)
    for root in out.values():
        with zipfile.ZipFile(root / 'acdc_submission.zip') as zf:
            assert sorted(zf.namelist()) == rels  # condition/test/sequence/<image name>
        assert sorted(str(p.relative_to(root)) for p in root.rglob('*_rgb_anon.png')) == rels
    train = np.asarray(Image.open(out[False] / rels[0]))
    assert train.dtype == np.uint8 and np.array_equal(train, pred.astype(np.uint8))
    ids = np.asarray(Image.open(out[True] / rels[0]))
    # Cityscapes label IDs: road 7, sidewalk 8, building 11, ..., bicycle 33; ignore -> 0
    expected = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    assert list(train_id_to_label_id_lut()[:19]) == expected
    assert ids[0, 0] == 0
    assert np.array_equal(ids[pred < 19], np.asarray(expected)[pred[pred < 19]])
    with zipfile.ZipFile(out[True] / 'acdc_submission.zip') as zf:
        z = np.asarray(Image.open(zf.open(rels[3])))
    assert np.array_equal(z, np.asarray(Image.open(out[True] / rels[3])))


def test_submission_writer_refuses_what_the_server_would(tmp_path):
    from mfuser.evaluation import ACDCSubmissionWriter, submission_path
    assert submission_path('/d/acdc/rgb_anon/rain/test/GP01/GP01_frame_000001_rgb_anon.png') \
        == 'rain/test/GP01/GP01_frame_000001_rgb_anon.png'
    with pytest.raises(ValueError, match='x/leftImg8bit/a.png is not an ACDC image path'):
        submission_path('x/leftImg8bit/a.png')
    w = ACDCSubmissionWriter(output_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r'prediction for .*a_rgb_anon.png is 4x2, the image '
                                         r'1920x1080'):
        w.process({}, [_sample('r/rgb_anon/fog/test/s/a_rgb_anon.png', np.zeros((2, 4)),
                               ori=(1080, 1920))])
    with pytest.raises(ValueError, match='needs output_dir'):
        ACDCSubmissionWriter()
    with pytest.raises(ValueError, match='only writes predictions'):
        ACDCSubmissionWriter(output_dir=str(tmp_path), format_only=False)


def test_format_only_switches_the_acdc_config_to_the_test_split():
    from mmengine.config import Config

    from mfuser.evaluation import use_format_only
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'mfuser_eva02_cityscapes_acdc.py'))
    assert cfg.test_dataloader.dataset.datasets[1].split == 'val'
    use_format_only(cfg, 'out/dir')
    sets = cfg.test_dataloader.dataset.datasets
    assert [(d.condition, d.split) for d in sets] == [(c, 'test') for c in CONDITIONS]
    assert all('Annotations' not in str(d.pipeline) for d in sets)  # no label loader
    assert cfg.test_evaluator == dict(type='ACDCSubmissionWriter', format_only=True,
                                      output_dir='out/dir')
    # a config without a separate benchmark split keeps its test set, predictions only
    demo = Config.fromfile(osp.join(REPO, 'configs', 'mfuser_tiny_synthetic.py'))
    use_format_only(demo, 'o')
    assert demo.test_evaluator.type == 'DGIoUMetric' and demo.test_evaluator.format_only
    with pytest.raises(ValueError, match='needs --out'):
        use_format_only(demo, None)


def test_make_synthetic_data_writes_acdc_on_request(tmp_path, capsys):
    from tool_scripts import tool

    from mfuser_tools.synthetic import prepare
    parse_args = tool('make_synthetic_data').parse_args
    assert 'acdc' not in parse_args([]).domains  # the demo's default stays the five domains
    args = parse_args(['--domains', 'cityscapes', 'acdc', '--num-train', '1', '--num-val', '1'])
    assert args.domains == ['cityscapes', 'acdc']
    reports = prepare(str(tmp_path), domains=['acdc'], num_train=1, num_val=1, size=SIZE,
                      nproc=1)
    assert reports == {} and 'acdc: labels are train IDs already' in capsys.readouterr().out
    assert len(list(tmp_path.glob('acdc/rgb_anon/*/*/*/*_rgb_anon.png'))) == 12
    assert len(list(tmp_path.glob('acdc/gt/*/*/*/*_gt_labelTrainIds.png'))) == 8
