"""Inference never overwrites and never gives up on the whole batch; corrupt checkpoints are
named as such (issue 14, part 4)."""
from __future__ import annotations

import io
import os
import os.path as osp
import pickle
import shutil
import subprocess
import sys

import pytest
import torch
from shared_files import shared_location
from tool_scripts import main_in_process, tool

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(REPO, 'configs', 'mfuser_tiny_synthetic.py')
REAL_PARTS = ('data', 'real', 'cityscapes_mmseg_pseudo', 'leftImg8bit', 'val', 'frankfurt',
              'frankfurt_000000_000294_leftImg8bit.png')  # 256x128
REAL_IMAGE = shared_location(*REAL_PARTS)  # not checked; needs_shared(*REAL_PARTS) checks it


def run_infer(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, osp.join(REPO, 'tools', 'infer.py'), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize('value', ['1.5', '-0.1', 'abc'])
def test_opacity_outside_0_1_is_rejected(value, capsys):
    infer = tool('infer')
    with pytest.raises(SystemExit) as info:
        infer.parse_args(['cfg.py', 'ckpt.pth', 'img.png', '--out-dir', 'o', '--opacity', value])
    assert info.value.code == 2
    assert '--opacity' in capsys.readouterr().err
    for ok in ('0', '1', '0.3'):
        assert infer.parse_args(['c', 'k', 'i', '--out-dir', 'o', '--opacity', ok]).opacity \
            == float(ok)


def test_output_names_keep_sub_folders_and_never_collide(tmp_path):
    infer = tool('infer')
    for rel in ('in/a/0001.png', 'in/b/0001.png', 'in/b/0002.png', 'in/b/0002.jpg',
                'other/0001.png'):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b'')
    inp = str(tmp_path / 'in')
    images = infer.list_images([inp, osp.join(inp, 'a', '0001.png')])  # listed twice
    assert len(images) == 4
    assert infer.output_names(images, [inp]) == ['a/0001', 'b/0001', 'b/0002_jpg', 'b/0002_png']
    two = infer.list_images([inp, str(tmp_path / 'other')])
    names = infer.output_names(two, [inp, str(tmp_path / 'other')])
    assert 'in/a/0001' in names and 'other/0001' in names and len(set(names)) == len(names)


def _corrupt_checkpoints(tmp_path):
    buf = io.BytesIO()
    torch.save({'state_dict': {'w': torch.ones(3)}}, buf, _use_new_zipfile_serialization=False)
    legacy = buf.getvalue()
    buf = io.BytesIO()
    torch.save({'state_dict': {'w': torch.ones(3)}}, buf)
    files = {
        'garbage_pickle.pth': b'\x80\x04' + bytes(range(256)) * 4,
        'truncated_pickle.pth': pickle.dumps({'a': list(range(100))}, protocol=4)[:40],
        'truncated_legacy.pth': legacy[:len(legacy) // 2],
        'truncated_zip.pth': buf.getvalue()[:len(buf.getvalue()) // 2],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return [tmp_path / n for n in files]


def test_corrupt_checkpoint_is_named_corrupt_without_suggesting_to_trust_it(tmp_path):
    from mfuser.engine.checkpoint import CheckpointError, load_trusted_local
    for path in _corrupt_checkpoints(tmp_path):
        with pytest.raises(CheckpointError) as info:
            load_trusted_local(str(path))
        msg = str(info.value)
        assert str(path) in msg and ('corrupt' in msg or 'not a PyTorch checkpoint' in msg)
        assert 'MFUSER_TRUST_CHECKPOINTS' not in msg and 'weights_only' not in msg, msg
    # the tool says it in one line (on a generated image: no ../shared needed)
    from PIL import Image
    image = tmp_path / 'image.png'
    Image.new('RGB', (64, 32), (90, 120, 60)).save(image)
    proc = run_infer([DEMO, str(tmp_path / 'garbage_pickle.pth'), str(image), '--out-dir',
                      str(tmp_path / 'out')], cwd=tmp_path)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith('error: ') and 'corrupt' in \
        proc.stderr and 'MFUSER_TRUST' not in proc.stderr
    assert not (tmp_path / 'out').exists()


@pytest.mark.needs_shared(*REAL_PARTS)
def test_infer_keeps_folders_skips_bad_files_and_never_overwrites(tmp_path, capsys):
    from mmseg.apis import init_model
    from PIL import Image
    infer = tool('infer')
    from mfuser.apis import inference_config
    model = init_model(inference_config(DEMO), None, device='cpu')
    ckpt = tmp_path / 'tiny.pth'
    torch.save(model.state_dict(), ckpt)
    inp = tmp_path / 'in'
    for sub in ('a', 'b', 'c'):
        (inp / sub).mkdir(parents=True)
        shutil.copy(REAL_IMAGE, inp / sub / '0001.png')
    (inp / 'b' / '0001.png').write_bytes(  # a different picture under the same name
        _flipped_png(REAL_IMAGE))
    data = (inp / 'c' / '0001.png').read_bytes()
    (inp / 'c' / '0001.png').write_bytes(data[:len(data) // 2])  # cut-off download
    out = tmp_path / 'out'
    code, _, err = main_in_process(infer, [DEMO, str(ckpt), str(inp), '--out-dir', str(out)],
                                   capsys)
    assert code == 1, err[-3000:]
    assert 'c/0001.png' in err and '1 of 3 image(s) skipped' in err
    files = sorted(osp.relpath(osp.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
    assert files == ['a/0001_overlay.png', 'a/0001_pred.png', 'b/0001_overlay.png',
                     'b/0001_pred.png']
    assert (out / 'a' / '0001_overlay.png').read_bytes() != \
        (out / 'b' / '0001_overlay.png').read_bytes()
    assert Image.open(out / 'a' / '0001_pred.png').size == (256, 128)
    # a second run into the same folder replaces nothing unless asked
    stamps = {f: os.stat(out / f).st_mtime_ns for f in files}
    code, _, err = main_in_process(infer, [DEMO, str(ckpt), str(inp / 'a'), str(inp / 'b'),
                                           '--out-dir', str(out)], capsys)
    assert code == 1 and 'already exist' in err and '--overwrite' in err
    assert {f: os.stat(out / f).st_mtime_ns for f in files} == stamps
    code, out_text, _ = main_in_process(infer, [DEMO, str(ckpt), str(inp), '--out-dir',
                                                str(out), '--skip-existing'], capsys)
    assert code == 1 and 'kept' in out_text  # c/0001.png is still unreadable
    assert {f: os.stat(out / f).st_mtime_ns for f in files} == stamps
    code, _, err = main_in_process(infer, [DEMO, str(ckpt), str(inp / 'a'), str(inp / 'c'),
                                           '--out-dir', str(out), '--overwrite', '--opacity',
                                           '1'], capsys)
    assert code == 1 and 'SKIPPED' in err and 'Traceback' not in err
    assert os.stat(out / 'a' / '0001_overlay.png').st_mtime_ns != stamps['a/0001_overlay.png']


def _flipped_png(path):
    from PIL import Image
    buf = io.BytesIO()
    Image.open(path).transpose(Image.FLIP_LEFT_RIGHT).save(buf, format='PNG')
    return buf.getvalue()
