"""DGIoUMetric: per-domain IoU equals a hand-computed confusion matrix; mean over domains."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from mfuser.evaluation import DGIoUMetric

CLASSES = ('a', 'b', 'c')


def _sample(pred, gt, domain=None, img_path='x.png'):
    s = dict(pred_sem_seg=dict(data=torch.tensor(pred)[None]),
             gt_sem_seg=dict(data=torch.tensor(gt)[None]), img_path=img_path)
    if domain:
        s['domain'] = domain
    return s


def _iou_from_confusion(preds, gts, k=3, ignore=255):
    cm = np.zeros((k, k), np.int64)  # rows gt, cols pred
    for p, g in zip(preds, gts):
        p, g = np.asarray(p).ravel(), np.asarray(g).ravel()
        m = g != ignore
        for gi, pi in zip(g[m], p[m]):
            cm[gi, pi] += 1
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid='ignore', divide='ignore'):
        return tp / union, tp.sum() / cm.sum()


P1, G1 = [[0, 0, 1], [1, 2, 2]], [[0, 1, 1], [1, 2, 255]]
P2, G2 = [[2, 2], [0, 1]], [[2, 0], [0, 1]]
P3, G3 = [[1, 1], [1, 1]], [[0, 0], [1, 1]]


def _run(metric, samples, meta=None):
    metric.dataset_meta = dict(classes=CLASSES, **(meta or {}))
    metric.process({}, samples)
    return metric.evaluate(len(samples))


def test_per_domain_matches_confusion_matrix(tmp_path):
    out = tmp_path / 'res.json'
    m = DGIoUMetric(output_file=str(out), protocol='test protocol')
    res = _run(m, [_sample(P1, G1, 'city'), _sample(P3, G3, 'bdd'), _sample(P2, G2, 'city')],
               meta=dict(domains=('city', 'bdd')))
    iou_c, acc_c = _iou_from_confusion([P1, P2], [G1, G2])
    iou_b, acc_b = _iou_from_confusion([P3], [G3])
    assert res['city/mIoU'] == pytest.approx(np.nanmean(iou_c) * 100, abs=0.01)
    assert res['bdd/mIoU'] == pytest.approx(np.nanmean(iou_b) * 100, abs=0.01)
    assert res['city/aAcc'] == pytest.approx(acc_c * 100, abs=0.01)
    mean = (np.nanmean(iou_c) + np.nanmean(iou_b)) / 2 * 100
    assert res['mean/mIoU'] == pytest.approx(mean, abs=0.02)
    assert res['mIoU'] == res['mean/mIoU']
    rep = json.loads(out.read_text())
    assert rep['protocol'] == 'test protocol'
    assert list(rep['domains']) == ['city', 'bdd']
    assert rep['domains']['city']['num_samples'] == 2
    for j, c in enumerate(CLASSES):
        exp = iou_c[j] * 100
        got = rep['domains']['city']['IoU'][c]
        assert (got is None and np.isnan(exp)) or got == pytest.approx(exp, abs=0.01)
    # class 'c' absent from bdd (no gt, no pred) -> NaN, excluded from the bdd mean
    assert rep['domains']['bdd']['IoU']['c'] is None
    assert rep['mean']['IoU']['c'] == pytest.approx(iou_c[2] * 100, abs=0.01)


def test_prefix_fallback_and_eval_classes():
    m = DGIoUMetric(domain_prefixes={'bdd': 'data/bdd100k', 'city': 'data/cityscapes'},
                    eval_classes=['a', 'b'])
    res = _run(m, [_sample(P1, G1, img_path='data/cityscapes/leftImg8bit/val/x.png'),
                   _sample(P3, G3, img_path='data/bdd100k/images/10k/val/y.jpg')])
    iou_c, _ = _iou_from_confusion([P1], [G1])
    iou_b, _ = _iou_from_confusion([P3], [G3])
    assert res['city/mIoU'] == pytest.approx(np.nanmean(iou_c[:2]) * 100, abs=0.01)
    assert res['bdd/mIoU'] == pytest.approx(np.nanmean(iou_b[:2]) * 100, abs=0.01)
    assert list(m.last_report['domains']) == ['city', 'bdd']  # order of appearance


def test_single_domain_equals_mmseg_iou_metric():
    from mmseg.evaluation import IoUMetric
    ref = IoUMetric()
    ref.dataset_meta = dict(classes=CLASSES)
    ref.process({}, [_sample(P1, G1), _sample(P2, G2)])
    r = ref.evaluate(2)
    res = _run(DGIoUMetric(), [_sample(P1, G1), _sample(P2, G2)])
    assert res['all/mIoU'] == r['mIoU'] and res['all/aAcc'] == r['aAcc']
    assert res['mean/mIoU'] == r['mIoU']


def test_table_and_json_next_to_log_file(tmp_path):
    from mmengine.logging import MMLogger
    (tmp_path / 'run').mkdir()
    MMLogger.get_instance('dg_metric_test', log_file=str(tmp_path / 'run' / 'x.log'))
    m = DGIoUMetric()
    _run(m, [_sample(P1, G1, 'city'), _sample(P3, G3, 'bdd')])
    header = m.last_table.splitlines()[1]
    assert all(w in header for w in ('Class', 'city', 'bdd', 'mean'))
    assert all(c in m.last_table for c in CLASSES) and 'mIoU' in m.last_table
    assert 'multi-domain results' in (tmp_path / 'run' / 'x.log').read_text()
    rep = json.loads((tmp_path / 'run' / 'dg_results.json').read_text())
    assert rep['metrics']['city/mIoU'] == m.last_report['metrics']['city/mIoU']


def test_output_dir_saves_predictions_per_domain_and_still_scores(tmp_path):
    m = DGIoUMetric(output_dir=str(tmp_path / 'preds'), output_file=str(tmp_path / 'r.json'))
    res = _run(m, [_sample(P1, G1, 'city', 'a/city_1.jpg'), _sample(P3, G3, 'bdd', 'b/x.jpg')])
    saved = np.asarray(Image.open(tmp_path / 'preds' / 'city' / 'city_1.png'))
    assert saved.dtype == np.uint8 and (saved == np.asarray(P1)).all()
    assert (np.asarray(Image.open(tmp_path / 'preds' / 'bdd' / 'x.png')) == np.asarray(P3)).all()
    assert 'city/mIoU' in res and 'bdd/mIoU' in res


def test_format_only_needs_no_ground_truth_and_an_output_dir(tmp_path):
    with pytest.raises(ValueError, match='needs output_dir'):
        DGIoUMetric(format_only=True)
    m = DGIoUMetric(format_only=True, output_dir=str(tmp_path / 'p'))
    sample = _sample(P2, G2, 'map', 'y.png')
    del sample['gt_sem_seg']
    assert _run(m, [sample]) == {}
    assert (np.asarray(Image.open(tmp_path / 'p' / 'map' / 'y.png')) == np.asarray(P2)).all()


def test_unknown_eval_classes_fail_when_the_data_set_is_attached():
    m = DGIoUMetric(eval_classes=['a', 'trucks'])
    with pytest.raises(ValueError, match=r"eval_classes \['trucks'\] are not classes"):
        m.dataset_meta = dict(classes=CLASSES)
