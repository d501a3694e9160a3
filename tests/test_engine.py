"""Runner-side helpers: safe checkpoint loading under torch >= 2.6, training curves."""
import json
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

from mfuser.engine import load_trusted_local, skip_pretrained_held_by


def test_runner_checkpoint_with_message_hub_loads_weights_only(tmp_path):
    hub = MessageHub.get_instance('test_ckpt_hub')
    for v in (1.0, 2.0, 3.0):
        hub.update_scalar('train/loss', v)
    ckpt = dict(meta=dict(iter=3, seed=np.int64(7), arr=np.arange(3)),
                state_dict=dict(w=torch.ones(2)), message_hub=hub.state_dict())
    path = tmp_path / 'iter_3.pth'
    torch.save(ckpt, path)
    out = load_trusted_local(str(path))
    assert out['meta']['iter'] == 3 and int(out['meta']['seed']) == 7
    buf = out['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer) and buf.current() == 3.0 and buf.mean() == 2.0


class _Call:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


@pytest.mark.parametrize('payload', [
    _Call(getattr, HistoryBuffer, '__init__'),  # a getattr chain towards __globals__
    _Call(getattr, np.ndarray, 'tofile'),  # an allow-listed type, but not HistoryBuffer
    _Call(os.system, 'true'),
])
def test_arbitrary_getattr_and_code_are_refused(tmp_path, payload):
    path = tmp_path / 'evil.pth'
    torch.save({'x': payload}, path)
    with pytest.raises(pickle.UnpicklingError, match='MFUSER_TRUST_CHECKPOINTS'):
        load_trusted_local(str(path))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_trusted_local(str(tmp_path / 'missing.pth'))


def test_pretrained_files_are_skipped_only_for_parts_the_checkpoint_holds(tmp_path):
    from mmengine.config import Config
    cfg = Config(dict(model=dict(
        backbone=dict(vfm=dict(checkpoint='dinov2.pth'), vlm=dict(checkpoint='eva.pt')),
        text_encoder=dict(checkpoint='eva.pt'))))
    path = tmp_path / 'iter_10.pth'
    # a trained model that holds the VFM and the text tower, but not the VLM image tower
    torch.save({'meta': {}, 'state_dict': {'backbone.vfm.blocks.0.w': torch.zeros(2),
                                           'text_encoder.token_embedding.weight': torch.zeros(2),
                                           'backbone.adapter.0.D': torch.zeros(2)}}, path)
    cleared = skip_pretrained_held_by(cfg, str(path))
    assert cleared == ['model.backbone.vfm.checkpoint', 'model.text_encoder.checkpoint']
    assert cfg.model.backbone.vfm.checkpoint is None and cfg.model.text_encoder.checkpoint is None
    assert cfg.model.backbone.vlm.checkpoint == 'eva.pt'  # still needed
    # a config without such keys is left alone
    bare = Config(dict(model=dict(backbone=dict(type='X'))))
    assert skip_pretrained_held_by(bare, str(path)) == []


def test_curves_from_scalar_log(tmp_path):
    from mfuser.engine.curves import plot_curves, read_scalars
    log = tmp_path / 'vis_data' / 'scalars.json'
    log.parent.mkdir()
    rows = [dict(step=i, loss=10.0 / i, **{'decode.loss_cls': 1.0 / i}) for i in range(1, 6)]
    rows.append({'step': 5, 'cityscapes/mIoU': 20.0, 'bdd100k/mIoU': 10.0, 'mean/mIoU': 15.0})
    log.write_text('\n'.join(json.dumps(r) for r in rows))
    train, val = read_scalars(str(log))
    assert train['loss'] == [(i, 10.0 / i) for i in range(1, 6)]
    assert train['decode.loss_cls'][-1] == (5, 0.2)
    assert val['cityscapes/mIoU'] == [(5, 20.0)] and 'mean/mIoU' in val
    assert 'cityscapes/mIoU' not in train
    png = tmp_path / 'curves.png'
    assert plot_curves(str(log), str(png)) == str(png)
    assert png.stat().st_size > 1000
    assert plot_curves(str(tmp_path / 'none.json'), str(png)) is None


def test_preflight_names_usable_keys_and_the_converter(tmp_path):
    from mmengine.config import Config

    from mfuser.apis import ConfigCheckError, check_cfg_options, check_config
    root = tmp_path / 'mapillary'
    (root / 'half' / 'val_img').mkdir(parents=True)  # images there, labels not converted
    cfg = Config(dict(test_dataloader=dict(dataset=dict(type='MultiDomainDataset', datasets=[
        dict(type='BDD100KDGDataset', data_root=str(tmp_path / 'nowhere')),
        dict(type='MapillaryDataset', data_root=str(root), half_res=True,
             data_prefix=dict(img_path='half/val_img', seg_map_path='half/val_label'))]))))
    with pytest.raises(ConfigCheckError) as info:
        check_config(cfg, 'test')
    msg = str(info.value)
    assert f'mapillary.py {root} --half-res`' in msg
    # the suggested override is one that --cfg-options accepts
    key = 'test_dataloader.dataset.datasets.0.data_root'
    assert f'--cfg-options {key}=/your/path' in msg
    check_cfg_options(cfg, {key: '/data/bdd100k'})


def test_checkpoint_mismatch_lists_missing_unexpected_and_reshaped(tmp_path):
    from mfuser.engine import (
        CheckpointError,
        checkpoint_mismatch,
        require_matching_checkpoint,
    )
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    good = tmp_path / 'good.pth'
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, good)
    assert checkpoint_mismatch(model, str(good)) is None
    bare = tmp_path / 'bare.pth'  # a plain state dict, DDP-prefixed
    torch.save({f'module.{k}': v for k, v in model.state_dict().items()}, bare)
    assert checkpoint_mismatch(model, str(bare)) is None

    state = model.state_dict()
    state.pop('1.bias')
    state['0.weight'] = torch.zeros(5, 3)
    state['2.weight'] = torch.zeros(1)
    bad = tmp_path / 'bad.pth'
    torch.save({'state_dict': state}, bad)
    with pytest.raises(CheckpointError) as info:
        require_matching_checkpoint(model, str(bad))
    msg = str(info.value)
    assert '1 weights of the model are not in it: 1.bias' in msg
    assert 'not in the model: 2.weight' in msg
    assert '0.weight (5, 3) vs (4, 3)' in msg


def test_a_file_that_is_no_checkpoint_is_named(tmp_path):
    from mfuser.engine import CheckpointError, read_state_dict
    png = tmp_path / 'photo.png'
    png.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(64))
    with pytest.raises(CheckpointError, match='not a PyTorch checkpoint'):
        load_trusted_local(str(png))
    notes = tmp_path / 'notes.pth'
    torch.save({'epoch': 3}, notes)
    with pytest.raises(CheckpointError, match='no model weights'):
        read_state_dict(str(notes))


def test_preflight_reports_backend_and_amp_this_machine_cannot_run(tmp_path, monkeypatch):
    from mmengine.config import Config

    from mfuser.apis import ConfigCheckError, check_config
    cfg = Config(dict(optim_wrapper=dict(type='AmpOptimWrapper', loss_scale='dynamic')))
    monkeypatch.setenv('MFUSER_SCAN_BACKEND', 'mamba_ssm')
    if torch.cuda.is_available():
        pytest.skip('checks the CPU-only case')
    with pytest.raises(ConfigCheckError) as info:
        check_config(cfg, 'train')
    msg = str(info.value)
    assert '$MFUSER_SCAN_BACKEND=mamba_ssm' in msg
    assert 'AmpOptimWrapper needs a GPU' in msg
    monkeypatch.setenv('MFUSER_SCAN_BACKEND', 'cpp')
    check_config(Config(dict()), 'test')  # available here: no complaint
