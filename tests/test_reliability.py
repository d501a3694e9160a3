"""Reliability, round two (issue 20): different inputs never share an output file; a file is
complete or absent; a user's mistake ends in one or two lines naming the file or key and the
fix (the traceback under --debug and in the log); nothing runs code from a weights file.

In-process checks take seconds; the tool runs (marked slow) use the embedded demo config on a
few generated synthetic images, and the real BDD100K JPEGs of ../shared/data/real.
"""
from __future__ import annotations

import argparse
import errno
import glob
import os
import os.path as osp
import resource
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from shared_files import shared_path
from tool_scripts import main_in_process, tool

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(REPO, 'configs', 'mfuser_tiny_synthetic.py')
FAST = ['train_dataloader.batch_size=1', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
        'val_dataloader.persistent_workers=False', 'default_hooks.logger.interval=1']


def run_tool(args, cwd, timeout=600, **kw):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **kw)


def error_lines(proc):
    """The tool's own last words: at most two lines, no traceback."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    tail = proc.stderr.strip().splitlines()
    start = max(i for i, line in enumerate(tail) if line.startswith('error: '))
    assert len(tail) - start <= 2, tail[start:]
    return '\n'.join(tail[start:])


def refused_pickle(path):
    """A weights file holding a Python object besides tensors (the weights-only loader
    refuses it; unpickling it normally would build that object)."""
    torch.save({'weight': torch.ones(2), 'extra': argparse.Namespace(x=1)}, path)
    return str(path)


# ------------------------------------------------------------------ 7: code from weights files
class _Payload(nn.Module):
    """A module whose state is restored by its own TorchScript code (which prints)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))

    def forward(self, x):
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        print('ARCHIVE CODE RAN')
        self.weight = state[0]
        self.training = state[1]


class _Plain(nn.Module):
    def __init__(self, payload=False):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
        self.register_buffer('table', torch.arange(6.).reshape(2, 3).half())
        self.attn_mask = torch.ones(2)  # a plain attribute: not in state_dict()
        self.payload = _Payload() if payload else nn.Identity()

    def forward(self, x):
        return self.payload(self.proj(x)) + self.attn_mask.sum()


def test_torchscript_weights_are_read_without_running_the_archives_code(tmp_path, capfd):
    from mfuser.models import pretrained as P
    plain = torch.jit.script(_Plain())
    plain.save(str(tmp_path / 'plain.pt'))
    torch.jit.script(_Plain(payload=True)).save(str(tmp_path / 'payload.pt'))
    state = P.load_state_dict_file(str(tmp_path / 'plain.pt'), 'model.backbone.vlm.checkpoint')
    expected = dict(plain.state_dict())  # what torch.jit.load(...).state_dict() gives
    assert sorted(state) == sorted(expected) and 'attn_mask' not in state
    for key, value in expected.items():
        assert state[key].dtype == value.dtype and torch.equal(state[key], value), key
    capfd.readouterr()
    with pytest.raises(P.CheckpointMismatchError) as info:
        P.load_state_dict_file(str(tmp_path / 'payload.pt'), 'model.backbone.vlm.checkpoint')
    assert 'ARCHIVE CODE RAN' not in capfd.readouterr().out  # torch.jit.load would print it
    msg = str(info.value)
    assert msg.startswith("model.backbone.vlm.checkpoint='") and '__setstate__' in msg
    assert 'MFUSER_TRUST_CHECKPOINTS=1' in msg  # the explicit opt-in


def test_a_crafted_archive_cannot_change_the_reader_for_later_files(tmp_path):
    """A data.pkl that BUILDs into the reader's storage types or helpers is refused, and the
    next archive still reads (nothing shared was modified)."""
    import zipfile

    from mfuser.models import torchscript_weights as tw
    plain = torch.jit.script(_Plain())
    plain.save(str(tmp_path / 'plain.pt'))
    with zipfile.ZipFile(tmp_path / 'plain.pt') as src:
        names = src.namelist()
        pkl = next(n for n in names if n.endswith('/data.pkl'))
        crafted = {  # GLOBAL torch FloatStorage, {'dtype': 1}, BUILD
            'storage': b'\x80\x02ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtypeK\x01sb.',
            # GLOBAL torch._utils _rebuild_tensor_v2, (None, {'__defaults__': ()}), BUILD
            'helper': (b'\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00'
                       b'__defaults__)s\x86b.')}
        for label, payload in crafted.items():
            bad = tmp_path / f'{label}.pt'
            with zipfile.ZipFile(bad, 'w') as dst:
                for n in names:
                    dst.writestr(n, payload if n == pkl else src.read(n))
            with pytest.raises(tw.TorchScriptReadError):
                tw.read_torchscript_weights(str(bad))
    state = tw.read_torchscript_weights(str(tmp_path / 'plain.pt'))
    for key, value in plain.state_dict().items():
        assert torch.equal(state[key], value), key


def test_refused_pretrained_pickle_is_one_clear_error_never_a_jit_load(tmp_path):
    from mfuser.models import pretrained as P
    path = refused_pickle(tmp_path / 'dinov2.pth')
    with pytest.raises(P.CheckpointMismatchError) as info:
        P.load_state_dict_file(path, 'model.backbone.vfm.checkpoint', expected='DINOv2 weights')
    msg = str(info.value)
    assert msg.startswith(f'model.backbone.vfm.checkpoint={path!r}: refused')
    assert 'argparse.Namespace' in msg and 'DINOv2 weights' in msg
    assert 'jit' not in msg and 'weights_only=False' not in msg and 'corrupt' not in msg
    assert len(msg.splitlines()) == 1


# ------------------------------------------------------------------ 3: complete or absent
def _big_model():
    """One weight of 4 MB: its checkpoint cannot be written under a 1 MB file-size limit."""
    from mmengine.model import BaseModel

    class Big(BaseModel):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1 << 20))

        def forward(self, inputs, data_samples=None, mode='tensor'):
            x = torch.stack(list(inputs)).float()
            loss = (self.w.mean() * x).pow(2).mean()
            return dict(loss=loss) if mode == 'loss' else x

    return Big()


@pytest.fixture
def file_size_limit():
    """Writes beyond 1 MB fail with EFBIG (as a full disk fails them with ENOSPC)."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_a_checkpoint_that_cannot_be_written_leaves_no_file(tmp_path, file_size_limit):
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config(dict(work_dir=str(tmp_path), default_hooks=dict(checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=1))))
    from mfuser.apis.runner import add_atomic_checkpoints
    add_atomic_checkpoints(cfg)  # what train_runner does to every config
    runner = Runner(
        model=_big_model(), work_dir=str(tmp_path), experiment_name=f'atomic_{os.getpid()}',
        train_dataloader=dict(dataset=[dict(inputs=torch.ones(1))] * 2, batch_size=1,
                              sampler=dict(type='InfiniteSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=False, max_iters=2),
        default_hooks=cfg.default_hooks.to_dict(), default_scope='mmseg')
    with pytest.raises(OSError) as info:
        runner.train()
    assert info.value.errno == errno.EFBIG
    assert info.value.filename == osp.join(str(tmp_path), 'iter_1.pth')  # named for the user
    assert sorted(f for f in os.listdir(tmp_path) if 'pth' in f) == []  # no cut-off file


def test_a_killed_write_leaves_the_old_file_and_its_part_is_cleaned_up(tmp_path):
    from mfuser.engine.atomic import atomic_write_bytes, remove_stale_parts
    target = tmp_path / 'iter_4.pth'
    target.write_bytes(b'old complete file')
    writer = subprocess.Popen([sys.executable, '-c', textwrap.dedent(f"""
        import os, time
        from mfuser.engine import atomic
        def stuck(src, dst):  # SIGKILL arrives after the data, before the rename
            print('written', flush=True)
            time.sleep(600)
        atomic.os.replace = stuck
        atomic.atomic_write_bytes({str(target)!r}, b'new' * 1000)
    """)], stdout=subprocess.PIPE, text=True, env=os.environ)
    try:
        assert writer.stdout.readline().strip() == 'written'
    finally:
        writer.kill()
        writer.wait()
    assert target.read_bytes() == b'old complete file'
    assert remove_stale_parts(str(tmp_path)) == [f'iter_4.pth.part-{writer.pid}']
    assert os.listdir(tmp_path) == ['iter_4.pth']
    atomic_write_bytes(target, b'new')
    assert target.read_bytes() == b'new'


@pytest.mark.parametrize('umask', [0o022, 0o002])
def test_converter_output_follows_the_umask(tmp_path, monkeypatch, umask):
    import mfuser.models.official_release as release
    conv = tool('model_converters/mfuser2mmseg')
    # the heavy parts (official key tables, the config's model) stubbed: the writing is real
    monkeypatch.setattr(release, 'convert_official_state_dict',
                        lambda state: (dict(state), {}, 'eva02'))
    monkeypatch.setattr(conv, 'model_shapes',
                        lambda config: {'w': (torch.Size([2]), torch.float32)})
    torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': {}}, tmp_path / 'src.pth')
    old = os.umask(umask)
    try:
        assert conv.main([str(tmp_path / 'src.pth'), str(tmp_path / 'dst.pth')]) == 0
    finally:
        os.umask(old)
    assert os.stat(tmp_path / 'dst.pth').st_mode & 0o777 == 0o666 & ~umask
    assert sorted(os.listdir(tmp_path)) == ['dst.pth', 'src.pth']


# ------------------------------------------------------------------ 1: infer output names
def test_infer_gives_case_and_extension_twins_their_own_results(tmp_path):
    infer = tool('infer')
    images = [str(tmp_path / 'in' / rel) for rel in (
        'sub/a.png', 'sub/a.PNG', 'x.png', 'x_png.png', 'x.jpg', 'b/0001.png')]
    for path in images:
        os.makedirs(osp.dirname(path), exist_ok=True)
        open(path, 'wb').close()
    names = infer.output_names(images, [str(tmp_path / 'in')])
    assert len({n.casefold() for n in names}) == len(images), names  # five results, not three
    assert names[-1] == 'b/0001'  # unambiguous names stay as they were
    assert names[4] == 'x_jpg' and names[3] == 'x_png_png'
    # the same input gets the same name in every run
    assert infer.output_names(images, [str(tmp_path / 'in')]) == names


# ------------------------------------------------------------------ 6: schedule checks
@pytest.mark.parametrize('key,value,expected', [
    ('train_cfg.max_iters', 0, 'train_cfg.max_iters = 0: nothing would be trained'),
    ('optim_wrapper.optimizer.lr', -0.01,
     'optim_wrapper.optimizer.lr = -0.01: a learning rate cannot be negative'),
])
def test_a_schedule_that_cannot_train_is_refused_naming_the_key(key, value, expected):
    from mfuser.apis import ConfigCheckError, check_config, load_config
    with pytest.raises(ConfigCheckError) as info:
        check_config(load_config(DEMO, {key: value}), 'train')
    assert expected in str(info.value)
    try:  # the demo's own schedule passes (whatever else this checkout lacks, e.g. data)
        check_config(load_config(DEMO), 'train')
    except ConfigCheckError as exc:
        assert 'train_cfg' not in str(exc) and 'optimizer' not in str(exc)


# ------------------------------------------------------------------ the tools end to end
@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """data/synthetic (4 domains, 2 train / 2 val images of 128x64) and a checkpoint of the
    demo model (random weights)."""
    from mmseg.apis import init_model

    from mfuser_tools.synthetic import prepare
    root = tmp_path_factory.mktemp('rel')
    prepare(str(root / 'data' / 'synthetic'), domains=['gta', 'cityscapes', 'bdd100k',
                                                       'mapillary'],
            num_train=2, num_val=2, size=(128, 64), seed=1, nproc=1)
    from mfuser.apis import inference_config
    model = init_model(inference_config(DEMO), None, device='cpu')
    torch.save(model.state_dict(), root / 'demo.pth')
    return root


@pytest.mark.slow
def test_infer_writes_one_result_per_input_for_twins(workspace, tmp_path, capsys):
    src = workspace / 'data/synthetic/cityscapes/leftImg8bit/val'
    first = sorted(src.rglob('*.png'))[:2]
    inp = tmp_path / 'in'
    (inp / 'sub').mkdir(parents=True)
    for name, source in (('sub/a.png', 0), ('sub/a.PNG', 1), ('x.png', 0), ('x_png.png', 1),
                         ('x.jpg', 1)):
        image = Image.open(first[source]).convert('RGB')
        image.save(inp / name, format='JPEG' if name.endswith('.jpg') else 'PNG')
    out = tmp_path / 'out'
    code, _, err = main_in_process(tool('infer'), [DEMO, str(workspace / 'demo.pth'), str(inp),
                                      '--out-dir', str(out)], capsys)
    assert code == 0, err[-3000:]
    results = sorted(osp.relpath(osp.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
    assert len([r for r in results if r.endswith('_overlay.png')]) == 5, results
    assert len([r for r in results if r.endswith('_pred.png')]) == 5, results


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The same JPEG (same compressed pixels) with an EXIF APP1 segment saying how to turn it."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = exif.tobytes()
    if not payload.startswith(b'Exif'):
        payload = b'Exif\x00\x00' + payload
    assert jpeg[:2] == b'\xff\xd8'
    return jpeg[:2] + b'\xff\xe1' + (len(payload) + 2).to_bytes(2, 'big') + payload + jpeg[2:]


@pytest.mark.slow
@pytest.mark.needs_shared('data', 'real', 'bdd100k', 'images', '10k')  # before the workspace
def test_infer_turns_phone_photos_upright_for_prediction_and_overlay(workspace, tmp_path,
                                                                     capsys):
    from PIL import ImageOps

    from mfuser.datasets import CITYSCAPES_METAINFO
    bdd = shared_path('data', 'real', 'bdd100k', 'images', '10k')
    jpeg = sorted(glob.glob(osp.join(bdd, '*', '*.jpg')))[0]
    inp = tmp_path / 'photos'
    inp.mkdir()
    with open(jpeg, 'rb') as f:  # read from ../shared, written only into tmp_path
        (inp / 'rotated.jpg').write_bytes(_with_exif_orientation(f.read(), 6))
    upright = ImageOps.exif_transpose(Image.open(inp / 'rotated.jpg')).convert('RGB')
    w, h = Image.open(jpeg).size
    assert upright.size == (h, w)  # orientation 6: turned by 90 degrees
    out = tmp_path / 'out'
    code, _, err = main_in_process(tool('infer'), [DEMO, str(workspace / 'demo.pth'), str(inp),
                                      '--out-dir', str(out)], capsys)
    assert code == 0, err[-3000:]
    pred = Image.open(out / 'rotated_pred.png')
    overlay = np.asarray(Image.open(out / 'rotated_overlay.png')).astype(float)
    assert pred.size == upright.size and overlay.shape[:2] == (w, h)
    colour = np.asarray(CITYSCAPES_METAINFO['palette'], float)[np.asarray(pred)]
    blend = 0.5 * np.asarray(upright, float) + 0.5 * colour
    assert np.abs(overlay - blend).mean() < 1.0  # the upright photo under the prediction


@pytest.mark.slow
def test_train_py_refused_files_and_a_full_disk_end_in_one_line(workspace, tmp_path):
    train = osp.join(REPO, 'tools', 'train.py')
    base = [train, DEMO, '--cfg-options', *FAST, 'train_cfg.max_iters=1',
            'train_cfg.val_interval=100', 'default_hooks.checkpoint.interval=1']
    refused = refused_pickle(tmp_path / 'refused.pth')
    # a refused pretrained file: one line naming key and file, no unrelated advice
    proc = run_tool([*base, f'model.backbone.vfm.checkpoint={refused}', '--work-dir',
                     str(tmp_path / 'wd_vfm')], cwd=workspace)
    msg = error_lines(proc)
    assert f"model.backbone.vfm.checkpoint={refused!r}: refused" in msg
    assert 'weights_only=False' not in msg and 'corrupt' not in msg and 'jit' not in msg
    # load_from = a refused file: one line naming it; the traceback is in the log
    wd = tmp_path / 'wd_load'
    proc = run_tool([*base, f'load_from={refused}', '--work-dir', str(wd)], cwd=workspace)
    msg = error_lines(proc)
    assert refused in msg and 'allow-list' in msg
    logs = glob.glob(str(wd / '*' / '*.log'))
    assert logs and 'Traceback' in open(logs[0]).read()
    # --debug: the traceback instead
    proc = run_tool([*base, f'load_from={refused}', '--work-dir', str(tmp_path / 'wd_dbg'),
                     '--debug'], cwd=workspace)
    assert proc.returncode != 0 and 'Traceback' in proc.stderr
    # --resume in an empty work dir says so; a full disk at the checkpoint leaves no file
    wd = tmp_path / 'wd_full'
    limit = osp.getsize(workspace / 'demo.pth') // 2  # logs fit, no checkpoint does

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    proc = run_tool([*base, '--work-dir', str(wd), '--resume'], cwd=workspace,
                    preexec_fn=limit_file_size)
    out = proc.stdout + proc.stderr
    assert 'Auto resumed from the latest checkpoint None' not in out
    assert f'--resume: no checkpoint in {wd} yet' in out
    msg = error_lines(proc)
    assert f'cannot write {wd / "iter_1.pth"}: File too large' in msg
    assert [f for f in os.listdir(wd) if 'iter_' in f] == []


@pytest.mark.slow
def test_train_py_refuses_a_schedule_that_cannot_train(workspace, tmp_path):
    for option, expected in (('train_cfg.max_iters=0', 'train_cfg.max_iters = 0'),
                             ('optim_wrapper.optimizer.lr=-0.01',
                              'optim_wrapper.optimizer.lr = -0.01')):
        wd = tmp_path / option.split('=')[0]
        proc = run_tool([osp.join(REPO, 'tools', 'train.py'), DEMO, '--work-dir', str(wd),
                         '--cfg-options', option], cwd=workspace, timeout=300)
        assert expected in error_lines(proc)
        assert not osp.exists(wd / 'train.lock')  # stopped before anything was set up


@pytest.mark.slow
def test_test_py_missing_labels_or_images_end_in_one_line(workspace, tmp_path):
    test = osp.join(REPO, 'tools', 'test.py')
    ckpt = str(workspace / 'demo.pth')
    bad = tmp_path / 'bdd'
    shutil.copytree(workspace / 'data/synthetic/bdd100k', bad)
    label = sorted((bad / 'labels/sem_seg/masks/val').glob('*.png'))[0]
    label.unlink()
    proc = run_tool([test, DEMO, ckpt, '--work-dir', str(tmp_path / 'wd1'), '--cfg-options',
                     f'test_dataloader.dataset.datasets.1.data_root={bad}'], cwd=workspace)
    msg = error_lines(proc)
    assert 'test_dataloader.dataset.datasets.1' in msg and label.name in msg
    for image in (bad / 'images/10k/val').glob('*'):
        image.unlink()
    proc = run_tool([test, DEMO, ckpt, '--work-dir', str(tmp_path / 'wd2'), '--cfg-options',
                     f'test_dataloader.dataset.datasets.1.data_root={bad}'], cwd=workspace)
    msg = error_lines(proc)
    assert 'test_dataloader.dataset.datasets.1' in msg and 'images/10k/val' in msg
    proc = run_tool([test, DEMO, ckpt, '--work-dir', str(tmp_path / 'wd3'), '--debug',
                     '--cfg-options', f'test_dataloader.dataset.datasets.1.data_root={bad}'],
                    cwd=workspace)
    assert proc.returncode != 0 and 'Traceback' in proc.stderr  # --debug: the traceback


@pytest.mark.slow
def test_test_py_out_keeps_sub_folders_lands_in_the_work_dir_and_never_mixes(workspace,
                                                                            tmp_path):
    data = tmp_path / 'cityscapes'
    shutil.copytree(workspace / 'data/synthetic/cityscapes', data)
    # a merged data set: one file name in two city folders, different pictures
    image = sorted((data / 'leftImg8bit/val').rglob('*.png'))[0]
    label = sorted((data / 'gtFine/val').rglob(image.name.split('_leftImg8bit')[0] + '*'))
    for src in (image, *label):
        twin = src.parent.parent / 'zz_merged' / src.name
        twin.parent.mkdir(exist_ok=True)
        Image.open(src).transpose(Image.FLIP_LEFT_RIGHT).save(twin)
    n_images = len(list((data / 'leftImg8bit/val').rglob('*.png')))
    wd = tmp_path / 'wd'
    args = [osp.join(REPO, 'tools', 'test.py'), DEMO, str(workspace / 'demo.pth'), '--work-dir',
            str(wd), '--out', 'preds', '--cfg-options',
            f'test_dataloader.dataset.datasets.0.data_root={data}']
    proc = run_tool(args, cwd=workspace)
    assert proc.returncode == 0, proc.stderr[-3000:]
    preds = wd / 'preds' / 'cityscapes'  # relative --out: under the work dir, as --show-dir
    saved = sorted(osp.relpath(p, preds) for p in glob.glob(str(preds / '**' / '*.png'),
                                                           recursive=True))
    assert len(saved) == n_images, saved
    assert f'zz_merged/{image.stem}.png' in saved and \
        f'{image.parent.name}/{image.stem}.png' in saved
    assert not (workspace / 'preds').exists()  # not in the current directory
    # a second run into the same --out would mix two runs' files: refused
    proc = run_tool(args, cwd=workspace)
    assert 'already holds files' in error_lines(proc)


def test_disk_errors_are_reported_with_the_file_and_the_fix():
    from mfuser.apis.reporting import user_message
    msg = user_message(OSError(errno.ENOSPC, 'No space left on device', 'wd/iter_8.pth'))
    assert msg.startswith('cannot write wd/iter_8.pth: No space left on device.')
    assert '--resume' in msg
    assert user_message(ZeroDivisionError('a bug')) is None  # keeps its traceback
