"""The C -> ACDC and GTAV + SYNTHIA configs (issue 21): their recipe, and one training
iteration + validation of each on generated data with the tiny demo model; the ACDC
submission end to end through ``tools/test.py --format-only``."""
from __future__ import annotations

import glob
import json
import os
import os.path as osp
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONDITIONS = ('fog', 'night', 'rain', 'snow')
ACDC_DOMAINS = [f'acdc_{c}' for c in CONDITIONS]


def load(name):
    return Config.fromfile(osp.join(REPO, 'configs', name))


def test_cityscapes_acdc_recipe():
    cfg, ref = load('mfuser_eva02_cityscapes_acdc.py'), load('mfuser_eva02_cityscapes.py')
    assert cfg.model == ref.model and cfg.optim_wrapper == ref.optim_wrapper
    assert cfg.train_dataloader == ref.train_dataloader  # Cityscapes, rare-class sampled
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(512, 512), stride=(341, 341))
    val = cfg.val_dataloader.dataset
    assert val.domains == ['cityscapes'] + ACDC_DOMAINS
    for domain, ds in zip(val.domains, val.datasets):
        resize = next(t for t in ds.pipeline if t['type'] == 'Resize')
        scale = (2048, 1024) if domain == 'cityscapes' else (1920, 1080)  # ACDC: native
        assert (tuple(resize.scale), resize.keep_ratio) == (scale, True)
        if domain != 'cityscapes':
            cond = domain.split('_')[1]
            assert (ds.type, ds.condition, ds.split) == ('ACDCDataset', cond, 'val')
            assert ds.data_prefix == dict(img_path=f'rgb_anon/{cond}/val',
                                          seg_map_path=f'gt/{cond}/val')
    ev = cfg.test_evaluator
    assert ev.mean_domains == ACDC_DOMAINS and ev.pooled_domains == dict(acdc_all=ACDC_DOMAINS)
    assert ev.protocol.startswith('tqdm/MFuser') and 'native 1920x1080' in ev.protocol
    sub = cfg.format_only_dataloader.dataset.datasets
    assert [(d.condition, d.split, d.data_prefix.img_path) for d in sub] == [
        (c, 'test', f'rgb_anon/{c}/test') for c in CONDITIONS]
    assert cfg.format_only_evaluator.type == 'ACDCSubmissionWriter'


def test_gta_synthia_recipe():
    cfg, gta, syn = (load('mfuser_eva02_gta_synthia.py'), load('mfuser_eva02_gta.py'),
                     Config.fromfile(osp.join(REPO, 'configs', '_base_', 'datasets',
                                              'synthia.py')))
    assert cfg.model == gta.model and cfg.val_dataloader == gta.val_dataloader
    ms = cfg.train_dataloader.dataset
    assert ms.type == 'MultiSourceRareClassDataset' and ms.sources == ['gta', 'synthia']
    assert (ms.min_pixels, ms.temperature, ms.min_crop_ratio) == (3000, 100, 0.5)
    # each source exactly as its single-source config has it (class, files, pipeline)
    assert ms.datasets[0] == gta.train_dataloader.dataset.dataset
    assert ms.datasets[1] == syn.train_synthia
    assert 'GTAV + SYNTHIA' in cfg.test_evaluator.train_data
    assert cfg.test_evaluator.protocol == gta.test_evaluator.protocol


# --------------------------------------------------------------------- one iteration
@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    pytest.importorskip('cv2')
    from mfuser_tools.synthetic import prepare
    root = tmp_path_factory.mktemp('ws') / 'synthetic'
    prepare(str(root), domains=['gta', 'synthia', 'cityscapes', 'bdd100k', 'mapillary', 'acdc'],
            num_train=2, num_val=1, size=(128, 64), seed=1, nproc=1)
    return root


def _tiny(cfg, root, work_dir):
    """The config with the demo's tiny model, generated data, small test scales, 1 iteration."""
    tiny = load('mfuser_tiny_synthetic.py')
    cfg.model = tiny.model
    cfg.work_dir = str(work_dir)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=1, val_interval=1)
    cfg.default_hooks.logger.interval = 1
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader',
                'format_only_dataloader'):
        if key in cfg:
            cfg[key].update(batch_size=1, num_workers=0, persistent_workers=False)
    for node in _datasets([cfg[k] for k in cfg.keys() if k.endswith('_dataloader')]):
        if 'data_root' in node:
            node.data_root = str(root / osp.basename(node.data_root.rstrip('/')))
        if node.get('type') in ('RareClassSampledDataset', 'MultiSourceRareClassDataset'):
            node.min_pixels = 100  # the release's 3000 is more than a 128x64 image holds
        for t in node.get('pipeline') or []:
            if t['type'] == 'Resize':
                t['scale'] = (256, 128)
    return cfg


def _datasets(node):
    if isinstance(node, dict):
        if 'type' in node and ('data_root' in node or 'dataset' in node or 'datasets' in node):
            yield node
        for v in node.values():
            yield from _datasets(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _datasets(v)


def _train_one_iteration(cfg):
    from mmengine.runner import Runner
    Runner.from_cfg(cfg).train()
    run = sorted(d for d in os.listdir(cfg.work_dir) if d.startswith('20'))[-1]
    run = osp.join(cfg.work_dir, run)
    log = open(glob.glob(osp.join(run, '*.log'))[0]).read()
    return json.load(open(osp.join(run, 'dg_results.json'))), log


@pytest.mark.slow
def test_cityscapes_acdc_one_iteration_and_submission(synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv('MFUSER_RCS_CACHE', str(tmp_path / 'rcs'))
    cfg = _tiny(load('mfuser_eva02_cityscapes_acdc.py'), synthetic, tmp_path / 'wd')
    res, log = _train_one_iteration(cfg)
    assert list(res['domains']) == ['cityscapes'] + ACDC_DOMAINS + ['acdc_all']
    assert res['mean_over'] == ACDC_DOMAINS
    assert all(res['domains'][d]['num_samples'] == 1 for d in ACDC_DOMAINS)
    assert res['domains']['acdc_all']['num_samples'] == 4
    mean = np.mean([res['domains'][d]['mIoU'] for d in ACDC_DOMAINS])
    assert res['mean']['mIoU'] == pytest.approx(mean, abs=0.02)
    assert 'acdc_all = acdc_fog + acdc_night + acdc_rain + acdc_snow' in log
    ckpt = osp.join(cfg.work_dir, 'iter_1.pth')
    assert osp.isfile(ckpt)

    # the submission, as a user makes it: tools/test.py --format-only --out DIR
    cfg_file = tmp_path / 'acdc_tiny.py'
    cfg.dump(str(cfg_file))
    out = tmp_path / 'submission'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'test.py'), str(cfg_file), ckpt,
         '--format-only', '--out', str(out), '--work-dir', str(tmp_path / 'wd_test')],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    images = sorted(glob.glob(str(synthetic / 'acdc' / 'rgb_anon' / '*' / 'test' / '*' / '*')))
    rels = sorted(osp.relpath(p, synthetic / 'acdc' / 'rgb_anon') for p in images)
    assert len(rels) == 4
    with zipfile.ZipFile(out / 'acdc_submission.zip') as zf:
        assert sorted(zf.namelist()) == rels
    for rel in rels:
        pred = np.asarray(Image.open(out / rel))
        assert pred.shape == (64, 128) and pred.dtype == np.uint8 and pred.max() < 19
    assert 'ACDC submission: 4 predictions' in proc.stdout + proc.stderr


@pytest.mark.slow
def test_gta_synthia_one_iteration(synthetic, tmp_path, monkeypatch):
    monkeypatch.setenv('MFUSER_RCS_CACHE', str(tmp_path / 'rcs'))
    cfg = _tiny(load('mfuser_eva02_gta_synthia.py'), synthetic, tmp_path / 'wd')
    res, log = _train_one_iteration(cfg)
    assert list(res['domains']) == ['cityscapes', 'bdd100k', 'mapillary']
    assert res['train_data'].startswith('GTAV + SYNTHIA')
    assert 'multi-source training on gta + synthia' in log
    assert f'gta: 2 images ({synthetic / "gta"})' in log
    assert f'synthia: 2 images ({synthetic / "synthia"})' in log
    assert len(os.listdir(tmp_path / 'rcs')) == 2  # statistics per source
