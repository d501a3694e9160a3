"""Training must not silently go wrong (issue 14, part 1).

Most checks run a real mmengine Runner in-process on a one-weight model (seconds); the
end-to-end ones drive tools/train.py.
"""
from __future__ import annotations

import json
import math
import os
import os.path as osp
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.model import BaseModel

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(REPO, 'configs', 'mfuser_tiny_synthetic.py')


class OneWeight(BaseModel):
    """loss_fit = (w * x)^2 (+ a constant loss_reg): SGD on it diverges fast for a large lr."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.register_buffer('mask', torch.tensor([float('-inf'), 0.0]))  # legitimately inf

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(list(inputs)).float()
        if mode == 'loss':
            return dict(loss_fit=((self.w * x) ** 2).mean(),
                        loss_reg=torch.zeros((), requires_grad=True) + 0.1)
        return self.w * x


class Values(torch.utils.data.Dataset):
    def __init__(self, values):
        self.values = values

    def __len__(self):
        return len(self.values)

    def __getitem__(self, i):
        return dict(inputs=torch.tensor(self.values[i]))


def make_runner(work_dir, values, lr, max_iters, hook=None, keep=1, interval=1,
                resume=False, load_from=None, save_last=False):
    from mmengine.runner import Runner
    custom = [dict(type='NonFiniteLossHook', **(hook or {}))] if hook is not None else []
    return Runner(
        model=OneWeight(), work_dir=str(work_dir),
        experiment_name=f'toy_{osp.basename(str(work_dir))}_{os.getpid()}_{id(values)}',
        train_dataloader=dict(dataset=Values(values), batch_size=1, num_workers=0,
                              sampler=dict(type='InfiniteSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=lr)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=interval,
                            max_keep_ckpts=keep, save_last=save_last),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=custom + [dict(type='TrainingCurvesHook')],
        log_processor=dict(by_epoch=False), default_scope='mmseg',
        resume=resume, load_from=load_from, randomness=dict(seed=0))


def checkpoints(work_dir):
    return sorted(f for f in os.listdir(work_dir) if f.endswith('.pth'))


def weight_of(path):
    from mfuser.engine.checkpoint import load_trusted_local
    return float(load_trusted_local(str(path))['state_dict']['w'])


def test_nonfinite_loss_stops_at_once_naming_iteration_and_terms(tmp_path):
    from mfuser.engine import NonFiniteLossError
    # w *= (1 - 2e6) per step: loss 1, 4e12, 1.6e25, 6.4e37, then inf at iteration 5
    runner = make_runner(tmp_path, [1.0] * 4, lr=1e6, max_iters=20, hook={})
    with pytest.raises(NonFiniteLossError) as info:
        runner.train()
    msg = str(info.value)
    assert 'iteration 5' in msg and 'loss_fit=inf' in msg and 'loss=inf' in msg
    assert 'loss_reg' not in msg  # only the terms that went non-finite
    assert 'iter_4.pth' in msg and 'optimizer.lr' in msg
    assert checkpoints(tmp_path) == ['iter_4.pth']  # nothing written for iteration 5
    assert math.isfinite(weight_of(tmp_path / 'iter_4.pth'))


def test_rotation_never_replaces_the_last_healthy_checkpoint(tmp_path):
    """The step of iteration 4 (finite loss) makes the weight -inf: its checkpoint is refused
    *before* CheckpointHook deletes the previous one (max_keep_ckpts=1)."""
    from mfuser.engine import NonFiniteLossError
    runner = make_runner(tmp_path, [0.1, 0.1, 0.1, 1.5e19], lr=1.0, max_iters=8, hook={})
    with pytest.raises(NonFiniteLossError, match=r'iteration 4: weights not finite \(w\)'):
        runner.train()
    assert checkpoints(tmp_path) == ['iter_3.pth']
    assert abs(weight_of(tmp_path / 'iter_3.pth')) < 2
    with open(tmp_path / 'last_checkpoint') as f:
        assert f.read().strip().endswith('iter_3.pth')


def test_skip_option_skips_bad_steps_and_stops_when_they_persist(tmp_path):
    from mfuser.engine import NonFiniteLossError
    values = [0.1, 1.5e19, 0.1, 0.1]  # one bad batch in four
    runner = make_runner(tmp_path / 'skip', values, lr=1.0, max_iters=6,
                         hook=dict(action='skip'))
    runner.train()  # iterations 2 and 6 are skipped, the weight stays finite
    assert checkpoints(tmp_path / 'skip') == ['iter_6.pth']
    w = weight_of(tmp_path / 'skip' / 'iter_6.pth')
    assert w == pytest.approx(0.98 ** 4, rel=1e-4)
    runner = make_runner(tmp_path / 'always', [1.5e19], lr=1.0, max_iters=10,
                         hook=dict(action='skip', max_skips=3))
    with pytest.raises(NonFiniteLossError, match='after 3 skipped steps in a row'):
        runner.train()


def test_resumed_run_keeps_the_whole_scalar_log_and_curves(tmp_path):
    from mfuser.engine import read_scalars
    values = [0.1] * 4
    first = make_runner(tmp_path, values, lr=0.1, max_iters=5, keep=-1, interval=2)
    first.train()  # checkpoints 2, 4; logged 1..5 (as if killed after iteration 5)
    old = osp.join(tmp_path, '20000101_000000')  # an earlier launch (runs share a second)
    os.rename(first.log_dir, old)
    second = make_runner(tmp_path, values, lr=0.1, max_iters=8, keep=-1, interval=2,
                         resume=True, load_from=str(tmp_path / 'iter_4.pth'))
    second.train()
    scalars = osp.join(second.log_dir, 'vis_data', 'scalars.json')
    train, _ = read_scalars(scalars)
    assert [s for s, _ in train['loss']] == list(range(1, 9))  # 5 is the resumed run's
    first_losses = dict(read_scalars(osp.join(old, 'vis_data', 'scalars.json'))[0]['loss'])
    assert dict(train['loss'])[3] == first_losses[3]
    assert osp.isfile(osp.join(second.log_dir, 'training_curves.png'))
    # the earlier run's own log is left as it was
    assert [s for s, _ in read_scalars(osp.join(old, 'vis_data', 'scalars.json'))[0]['loss']] \
        == [1, 2, 3, 4, 5]


# ----------------------------------------------------------------------------- tools
def run_tool(args, cwd, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize('option,expected', [
    ('train_cfg.max_iters=abc', "train_cfg.max_iters='abc': expected an integer"),
    ('optim_wrapper.optimizer.lr=abc', "optim_wrapper.optimizer.lr='abc': expected a number"),
    ('train_dataloader.pin_memory=abc', "pin_memory='abc': expected true or false"),
])
def test_cfg_options_of_the_wrong_type_fail_before_anything_runs(tmp_path, option, expected):
    from mfuser.apis import ConfigCheckError, load_config
    key, value = option.split('=')
    with pytest.raises(ConfigCheckError, match='wrong type') as info:
        load_config(DEMO, {key: value})
    assert expected in str(info.value)
    # values of the right type pass (an int where a float is expected, None anywhere)
    load_config(DEMO, {'optim_wrapper.optimizer.lr': 1, 'train_cfg.max_iters': 10,
                       'train_dataloader.pin_memory': True, 'load_from': None,
                       'model.decode_head.loss_cls.loss_weight': 2.5})
    proc = run_tool([osp.join(REPO, 'tools', 'train.py'), DEMO, '--work-dir',
                     str(tmp_path / 'wd'), '--cfg-options', option], cwd=tmp_path)
    assert proc.returncode != 0 and expected in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not (tmp_path / 'wd').exists()


def test_second_training_in_a_work_dir_is_refused_and_a_killed_ones_lock_is_not(tmp_path):
    wd = tmp_path / 'wd'
    holder = subprocess.Popen(
        [sys.executable, '-c', textwrap.dedent(f"""
            import sys, time
            from mfuser.apis.workdir import acquire_work_dir
            acquire_work_dir({str(wd)!r})
            print('locked', flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True,
        env=os.environ)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        # (no data in tmp_path: without the lock the run would stop at the data check)
        proc = run_tool([osp.join(REPO, 'tools', 'train.py'), DEMO, '--work-dir', str(wd),
                         '--resume'], cwd=tmp_path)
        assert proc.returncode != 0
        assert 'is in use by a running training' in proc.stderr, proc.stderr
        assert f'pid {holder.pid}' in proc.stderr and 'Traceback' not in proc.stderr
    finally:
        holder.kill()  # SIGKILL: no clean-up runs
        holder.wait()
    info = json.load(open(wd / 'train.lock'))
    assert info['pid'] == holder.pid  # the dead run's record is still there ...
    from mfuser.apis.workdir import acquire_work_dir, check_work_dir_free
    check_work_dir_free(str(wd))  # ... but it holds nothing
    proc = run_tool([osp.join(REPO, 'tools', 'train.py'), DEMO, '--work-dir', str(wd),
                     '--resume'], cwd=tmp_path)
    assert 'in use' not in proc.stderr and 'data_root' in proc.stderr  # got past the lock
    acquire_work_dir(str(wd))
    assert json.load(open(wd / 'train.lock'))['pid'] == os.getpid()


@pytest.mark.slow
def test_train_py_stops_on_a_diverging_learning_rate(tmp_path):
    """tools/train.py on the demo config with lr=1e6: one line naming iteration and terms."""
    from mfuser_tools.synthetic import prepare
    prepare(str(tmp_path / 'data' / 'synthetic'), domains=['gta', 'cityscapes', 'bdd100k',
                                                          'mapillary'],
            num_train=4, num_val=1, size=(128, 64), seed=1, nproc=1)
    wd = tmp_path / 'wd'
    proc = run_tool([osp.join(REPO, 'tools', 'train.py'), DEMO, '--work-dir', str(wd),
                     '--cfg-options', 'optim_wrapper.optimizer.lr=1e6',
                     'param_scheduler.0.start_factor=1.0', 'train_cfg.max_iters=30',
                     'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=1',
                     'default_hooks.checkpoint.max_keep_ckpts=1',
                     'train_dataloader.batch_size=1', 'train_dataloader.num_workers=0',
                     'train_dataloader.persistent_workers=False',
                     'default_hooks.logger.interval=1'], cwd=tmp_path, timeout=900)
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: training stopped at iteration ') and 'not finite' in last
    assert 'Traceback' not in proc.stderr
    from mfuser.engine.checkpoint import load_trusted_local
    for name in checkpoints(wd):  # whatever is left is healthy
        state = load_trusted_local(str(wd / name))['state_dict']
        assert all(bool(torch.isfinite(v).all()) for k, v in state.items()
                   if v.is_floating_point() and 'mask' not in k), name
