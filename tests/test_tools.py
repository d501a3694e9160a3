"""The user-facing tools end to end: train / test / infer, resume, DDP, fail-fast checks.

Every run uses the embedded demo config (configs/mfuser_tiny_synthetic.py) on a few generated
synthetic images, in a scratch directory whose ``data/synthetic`` the config's relative data
roots point at.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(REPO, 'configs', 'mfuser_tiny_synthetic.py')
FAST = ['train_dataloader.batch_size=1', 'default_hooks.logger.interval=1',
        'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False']


def run(args, cwd, timeout=600, check=True, **kw):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n'
                             f'{proc.stderr[-4000:]}')
    return proc


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """A directory with data/synthetic (4 domains, 6 train / 2 val images of 128x64)."""
    from mfuser_tools.synthetic import prepare
    root = tmp_path_factory.mktemp('ws')
    prepare(str(root / 'data' / 'synthetic'), domains=['gta', 'cityscapes', 'bdd100k',
                                                       'mapillary'],
            num_train=6, num_val=2, size=(128, 64), seed=1, nproc=1)
    # a config with the rank-consistency check added (for the DDP test)
    (root / 'ddp_cfg.py').write_text(
        f"_base_ = [{DEMO!r}]\n"
        "custom_imports = dict(imports=['mfuser', 'mfuser.engine.safe_loading', 'rank_check'])\n"
        "custom_hooks = [dict(type='TrainingCurvesHook'), dict(type='RankConsistencyHook')]\n")
    return root


def walk_files(folder):
    """Paths of all files under ``folder``, relative to it."""
    return sorted(osp.relpath(osp.join(d, f), folder) for d, _, fs in os.walk(folder)
                  for f in fs)


def last_run_dir(work_dir):
    runs = sorted(d for d in os.listdir(work_dir) if d.startswith('20'))
    return osp.join(work_dir, runs[-1])


@pytest.fixture(scope='module')
def trained(workspace):
    """The work dir of a 4-iteration demo training (``--tensorboard``, a checkpoint every 2
    iterations, validation at the end), shared by the test / infer scenarios below."""
    wd = str(workspace / 'wd_e2e')
    run([osp.join(REPO, 'tools/train.py'), DEMO, '--tensorboard',
         '--work-dir', wd, '--cfg-options', 'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
         'default_hooks.checkpoint.interval=2', *FAST], cwd=workspace)
    return wd


ONE_PER_DOMAIN = [f'test_dataloader.dataset.datasets.{i}.indices=1' for i in range(3)]
DOMAINS = ('cityscapes', 'bdd100k', 'mapillary')


@pytest.mark.slow
def test_train_writes_checkpoints_logs_tensorboard_and_dg_results(trained):
    assert osp.isfile(osp.join(trained, 'iter_4.pth'))
    run_dir = last_run_dir(trained)
    # --tensorboard: event files next to the local backend's scalars
    vis = osp.join(run_dir, 'vis_data')
    assert osp.isfile(osp.join(vis, 'scalars.json'))
    assert any(osp.basename(f).startswith('events.out.tfevents') for f in walk_files(vis))
    text = json.dumps(json.load(open(osp.join(run_dir, 'dg_results.json'))))
    assert all(domain in text for domain in DOMAINS)
    assert osp.isfile(osp.join(run_dir, 'training_curves.png'))


@pytest.mark.slow
def test_test_prints_domains_and_saves_predictions_and_paintings(trained, workspace):
    wd = str(workspace / 'wd_test')
    proc = run([osp.join(REPO, 'tools/test.py'), DEMO, osp.join(trained, 'iter_4.pth'),
                '--work-dir', wd, '--show-dir', 'show', '--out', 'preds'], cwd=workspace)
    out = proc.stdout + proc.stderr
    assert 'multi-domain results' in out and 'mean/mIoU' in out
    for domain in DOMAINS:
        assert f'{domain}/mIoU' in out
        # --out: one train-ID PNG per target image (2 per domain), per domain, under the
        # work dir (a relative --out, like --show-dir)
        assert len(walk_files(osp.join(wd, 'preds', domain))) == 2
    # --show-dir: every test image painted (not mmseg's every 50th), under the work dir
    assert len(os.listdir(osp.join(wd, 'show', 'vis_data', 'vis_image'))) == 6


@pytest.mark.slow
def test_test_needs_no_tower_files_the_checkpoint_holds(trained, workspace):
    proc = run([osp.join(REPO, 'tools/test.py'), DEMO, osp.join(trained, 'iter_4.pth'),
                '--work-dir', str(workspace / 'wd_towers'), '--cfg-options',
                'model.backbone.vfm.checkpoint=/nowhere/dinov2.pth',
                'model.text_encoder.checkpoint=/nowhere/eva02.pt', *ONE_PER_DOMAIN],
               cwd=workspace)
    assert 'model.backbone.vfm.checkpoint: not needed' in proc.stdout + proc.stderr


@pytest.mark.slow
def test_test_refuses_a_checkpoint_that_does_not_fit(trained, workspace):
    """Not tested half-random: one line naming the weights that differ."""
    proc = run([osp.join(REPO, 'tools/test.py'), DEMO, osp.join(trained, 'iter_4.pth'),
                '--work-dir', str(workspace / 'wd_mismatch'), '--cfg-options',
                'model.backbone.adapter.d_state=4'], cwd=workspace, check=False)
    assert proc.returncode != 0 and 'does not fit the model' in proc.stderr
    assert 'adapter.0.A_log' in proc.stderr and 'Traceback' not in proc.stderr


@pytest.mark.slow
def test_test_tta_runs_mmsegs_tta_model_per_domain(trained, workspace):
    proc = run([osp.join(REPO, 'tools/test.py'), DEMO, osp.join(trained, 'iter_4.pth'), '--tta',
                '--work-dir', str(workspace / 'wd_tta'), '--cfg-options', *ONE_PER_DOMAIN],
               cwd=workspace)
    out = proc.stdout + proc.stderr
    assert 'SegTTAModel' in out and 'TestTimeAug' in out
    assert all(f'{domain}/mIoU' in out for domain in DOMAINS)


@pytest.mark.slow
def test_test_stops_on_a_bad_label_with_one_line(trained, workspace):
    import shutil

    import numpy as np
    from PIL import Image
    bad_root = workspace / 'bad_bdd'
    shutil.copytree(workspace / 'data' / 'synthetic' / 'bdd100k', bad_root)
    masks = sorted(p for p in (bad_root / 'labels').rglob('*.png') if p.parent.name == 'val')
    label = np.array(Image.open(masks[0]))
    label[0, :5] = 200
    Image.fromarray(label).save(masks[0])
    proc = run([osp.join(REPO, 'tools/test.py'), DEMO, osp.join(trained, 'iter_4.pth'),
                '--work-dir', str(workspace / 'wd_bad_label'), '--cfg-options',
                f'test_dataloader.dataset.datasets.1.data_root={bad_root}'],
               cwd=workspace, check=False)
    assert proc.returncode != 0 and 'Traceback' not in proc.stderr
    assert 'value 200' in proc.stderr and masks[0].name in proc.stderr


@pytest.mark.slow
def test_infer_takes_a_bare_state_dict_and_refuses_a_file_that_is_no_checkpoint(trained,
                                                                                workspace):
    import torch
    ckpt = torch.load(osp.join(trained, 'iter_4.pth'), map_location='cpu', weights_only=False)
    torch.save(ckpt['state_dict'], workspace / 'bare.pth')
    image = 'data/synthetic/cityscapes/leftImg8bit/val'
    run([osp.join(REPO, 'tools/infer.py'), DEMO, str(workspace / 'bare.pth'), image,
         '--limit', '1', '--out-dir', str(workspace / 'overlays_bare')], cwd=workspace)
    assert len(walk_files(workspace / 'overlays_bare')) == 2
    (workspace / 'photo.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(64))
    proc = run([osp.join(REPO, 'tools/infer.py'), DEMO, str(workspace / 'photo.png'), image,
                '--out-dir', str(workspace / 'overlays_png')], cwd=workspace, check=False)
    assert proc.returncode != 0 and 'not a PyTorch checkpoint' in proc.stderr


@pytest.mark.slow
def test_infer_writes_predictions_and_overlays_in_the_inputs_folders(trained, workspace):
    import numpy as np
    from PIL import Image

    from mfuser.datasets import CITYSCAPES_METAINFO
    overlays = str(workspace / 'overlays')
    run([osp.join(REPO, 'tools/infer.py'), DEMO, osp.join(trained, 'iter_4.pth'),
         'data/synthetic/cityscapes/leftImg8bit/val', '--out-dir', overlays], cwd=workspace)
    files = walk_files(overlays)  # the input's city sub-folders are kept
    assert len([f for f in files if f.endswith('_overlay.png')]) == 2
    assert all(osp.dirname(f) for f in files)
    pred = [f for f in files if f.endswith('_pred.png')][0]
    arr = Image.open(osp.join(overlays, pred))
    assert arr.size == (128, 64) and max(arr.getdata()) < 19
    # the overlay is the image blended with the palette colour of the prediction (opacity 0.5)
    source = (workspace / 'data/synthetic/cityscapes/leftImg8bit/val' /
              pred.replace('_pred.png', '.png'))
    rgb = np.asarray(Image.open(source).convert('RGB')).astype(float)
    colour = np.asarray(CITYSCAPES_METAINFO['palette'], float)[np.asarray(arr)]
    overlay = np.asarray(Image.open(osp.join(overlays, pred.replace('_pred', '_overlay'))))
    assert np.abs(overlay - (0.5 * rgb + 0.5 * colour)).max() <= 1


@pytest.mark.slow
def test_kill_and_resume(workspace):
    wd = str(workspace / 'wd_resume')
    args = [osp.join(REPO, 'tools/train.py'), DEMO, '--work-dir', wd, '--cfg-options',
            'train_cfg.max_iters=8', 'train_cfg.val_interval=100',
            'default_hooks.checkpoint.interval=2', *FAST]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.Popen([sys.executable, *args], cwd=workspace, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while not osp.isfile(osp.join(wd, 'iter_4.pth')) and proc.poll() is None:
            assert time.time() < deadline, 'no checkpoint after 300 s'
            time.sleep(0.2)
        time.sleep(0.5)  # let the checkpoint file be complete
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not osp.isfile(osp.join(wd, 'iter_8.pth')), 'training finished before the kill'
    assert osp.isfile(osp.join(wd, 'train.lock'))  # left by the killed run: must not block
    killed_at = max(int(f[5:-4]) for f in os.listdir(wd) if f.startswith('iter_'))
    assert killed_at in (4, 6)

    proc = run([*args[:4], '--resume', *args[4:]], cwd=workspace)
    out = proc.stdout + proc.stderr
    assert 'resumed' in out.lower()
    assert osp.isfile(osp.join(wd, 'iter_8.pth'))
    resumed_log = open(sorted(
        osp.join(last_run_dir(wd), f) for f in os.listdir(last_run_dir(wd))
        if f.endswith('.log'))[-1]).read()
    assert f'Iter(train) [{killed_at + 1}/8]' in resumed_log
    assert 'Iter(train) [1/8]' not in resumed_log
    # ... but its scalar log (and curves) cover the whole run
    from mfuser.engine import read_scalars
    train, _ = read_scalars(osp.join(last_run_dir(wd), 'vis_data', 'scalars.json'))
    assert [step for step, _ in train['loss']] == list(range(1, 9))
    # the resumed checkpoint continues the optimizer state and iteration counter
    from mfuser.engine.checkpoint import load_trusted_local
    ckpt = load_trusted_local(osp.join(wd, 'iter_8.pth'))
    assert ckpt['meta']['iter'] == 8 and 'optimizer' in ckpt

    # a fresh run (no --resume) in this work dir would overwrite these: refused, untouched
    before = {f: os.path.getmtime(osp.join(wd, f)) for f in os.listdir(wd)}
    proc = run(args, cwd=workspace, check=False)
    assert proc.returncode != 0
    assert 'already holds checkpoints' in proc.stderr and '--resume' in proc.stderr
    assert {f: os.path.getmtime(osp.join(wd, f)) for f in os.listdir(wd)} == before
    # resuming with a config that builds another model is refused with the reason
    proc = run([*args[:4], '--resume', *args[4:], 'model.backbone.adapter.d_state=4'],
               cwd=workspace, check=False)
    assert proc.returncode != 0 and 'cannot resume' in proc.stderr
    assert 'have another shape' in proc.stderr


@pytest.mark.slow
def test_two_process_gloo_training_ranks_agree(workspace):
    wd = str(workspace / 'wd_ddp')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         '--standalone', osp.join(REPO, 'tools/train.py'), str(workspace / 'ddp_cfg.py'),
         '--launcher', 'pytorch', '--work-dir', wd, '--cfg-options', 'train_cfg.max_iters=3',
         'train_cfg.val_interval=3', 'default_hooks.checkpoint.interval=3', *FAST],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    record = json.load(open(osp.join(wd, 'rank_checksums.json')))
    assert record['world_size'] == 2
    assert record['max_abs_diff'] == 0.0
    log = open(sorted(osp.join(last_run_dir(wd), f) for f in os.listdir(last_run_dir(wd))
                      if f.endswith('.log'))[-1]).read()
    assert 'Distributed training: True' in log and 'GPU number: 2' in log  # mmengine's wording
    assert osp.isfile(osp.join(wd, 'iter_3.pth'))

    # distributed testing gathers every rank's samples: same table as one process
    ckpt = osp.join(wd, 'iter_3.pth')
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         '--standalone', osp.join(REPO, 'tools/test.py'), DEMO, ckpt,
         '--launcher', 'pytorch', '--work-dir', str(workspace / 'wd_ddp_test')],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    dist = json.load(open(osp.join(last_run_dir(workspace / 'wd_ddp_test'), 'dg_results.json')))
    run([osp.join(REPO, 'tools/test.py'), DEMO, ckpt, '--work-dir',
         str(workspace / 'wd_single_test')], cwd=workspace)
    single = json.load(open(osp.join(last_run_dir(workspace / 'wd_single_test'),
                                     'dg_results.json')))
    assert [d['num_samples'] for d in dist['domains'].values()] == [2, 2, 2]
    assert dist['domains'] == single['domains'] and dist['mean'] == single['mean']


def test_full_config_without_data_or_weights_fails_fast(tmp_path):
    proc = run([osp.join(REPO, 'tools/train.py'), osp.join(REPO, 'configs/mfuser_eva02_gta.py'),
                '--work-dir', str(tmp_path / 'wd')], cwd=tmp_path, check=False, timeout=300)
    assert proc.returncode != 0
    err = proc.stderr
    for needle in ("'data/gta/'", "'data/cityscapes/'", "'data/bdd100k/'", "'data/mapillary/'",
                   'dinov2_vitl14_pretrain.pth', 'EVA02_CLIP_L_336_psz14_s6B.pt',
                   'model.backbone.vfm.checkpoint', 'model.text_encoder.checkpoint',
                   'data/README.md'):
        assert needle in err, (needle, err)
    assert not (tmp_path / 'wd').exists(), 'nothing may be written before the checks pass'


def test_wrong_config_keys_are_reported(tmp_path):
    proc = run([osp.join(REPO, 'tools/train.py'), DEMO, '--cfg-options',
                'model.backbone.with_pc=True', 'train_cfg.max_iter=5'],
               cwd=tmp_path, check=False, timeout=300)
    assert proc.returncode != 0
    assert "no key 'with_pc'" in proc.stderr and 'with_cp' in proc.stderr
    # train_cfg names IterBasedTrainLoop, whose constructor has max_iters, not max_iter
    assert "train_cfg has no key 'max_iter'" in proc.stderr and 'max_iters' in proc.stderr
    proc = run([osp.join(REPO, 'tools/test.py'), DEMO, str(tmp_path / 'none.pth')],
               cwd=tmp_path, check=False, timeout=300)
    assert proc.returncode != 0 and 'none.pth' in proc.stderr and 'not found' in proc.stderr


def test_check_cfg_options_allows_free_form_settings():
    from mmengine.config import Config

    from mfuser.apis import ConfigCheckError, check_cfg_options
    cfg = Config.fromfile(DEMO)
    check_cfg_options(cfg, {'model.backbone.vfm.drop_path_rate': 0.1,
                            'train_cfg.max_iters': 10,
                            'model.decode_head.pixel_decoder.encoder.num_layers': 2,
                            'val_dataloader.dataset.datasets.0.data_root': 'x'})
    with pytest.raises(ConfigCheckError, match="no key 'decoder_head'.*decode_head"):
        check_cfg_options(cfg, {'model.decoder_head.num_classes': 3})
    with pytest.raises(ConfigCheckError, match="no key 'lrr'.*Did you mean lr"):
        check_cfg_options(cfg, {'optim_wrapper.optimizer.lrr': 3})


def test_check_cfg_options_accepts_constructor_arguments_the_config_leaves_out():
    from mmengine.config import Config

    from mfuser.apis import ConfigCheckError, check_cfg_options
    cfg = Config.fromfile(DEMO)
    assert 'indices' not in cfg.test_dataloader.dataset.datasets[0]
    check_cfg_options(cfg, {'test_dataloader.dataset.datasets.0.indices': 2,  # BaseDataset
                            'optim_wrapper.optimizer.amsgrad': True,  # torch AdamW
                            'train_dataloader.pin_memory': True,  # torch DataLoader
                            'randomness.deterministic': True,  # Runner.set_randomness
                            'log_processor.window_size': 10})
    for key, hint in [('test_dataloader.dataset.datasets.0.indics', 'indices'),
                      ('train_dataloader.pin_memry', 'pin_memory'),
                      ('randomness.determinstic', 'deterministic'),
                      ('train_cfg.max_iter', 'max_iters'),
                      ('model.test_cfg.stide', 'stride'),  # settings read without a type
                      ('model.decode_head.train_cfg.num_point', 'num_points'),
                      ('env_cfg.cudnn_benchmrk', 'cudnn_benchmark'),
                      # mmdet's head arguments that ours sets itself or does not take
                      ('model.decode_head.num_queries', 'num_classes'),
                      ('model.decode_head.stacked_convs', '')]:
        with pytest.raises(ConfigCheckError, match=f"no key '{key.split('.')[-1]}'.*{hint}"):
            check_cfg_options(cfg, {key: 1})
