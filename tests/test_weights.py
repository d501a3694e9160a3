"""The weights' lifecycle (mfuser.engine.weights): checkpoints hold what trains, the frozen
towers come back from the config's files, checkpoints load strictly and once."""
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from mmseg.registry import MODELS
from tiny_models import tiny_mfuser_cfg

import mfuser  # noqa: F401
from mfuser.engine import CheckpointError, TrainableCheckpointHook, require_matching_checkpoint


@pytest.fixture
def pretrained(tmp_path):
    """Tiny 'pretrained' tower and text files in the layouts the loaders read, and the config
    naming them."""
    torch.manual_seed(0)
    source = MODELS.build(tiny_mfuser_cfg()).eval()
    files = dict(vfm=tmp_path / 'dinov2.pth', vlm=tmp_path / 'eva02.pt',
                 text=tmp_path / 'text.pt')
    torch.save(source.backbone.vfm.state_dict(), files['vfm'])
    torch.save(source.backbone.vlm.state_dict(), files['vlm'])
    torch.save(source.text_encoder.state_dict(), files['text'])
    cfg = tiny_mfuser_cfg()
    cfg['backbone']['vfm']['checkpoint'] = str(files['vfm'])
    cfg['backbone']['vlm']['checkpoint'] = str(files['vlm'])
    cfg['text_encoder']['checkpoint'] = str(files['text'])
    return Config(dict(model=cfg)), files


def save_through_hook(model, cfg, path, **hook_kw):
    """What mmengine's Runner.save_checkpoint does around the hook."""
    checkpoint = dict(meta=dict(iter=4), state_dict={k: v.clone() for k, v in
                                                     model.state_dict().items()})
    TrainableCheckpointHook(**hook_kw).before_save_checkpoint(
        SimpleNamespace(model=model, cfg=cfg), checkpoint)
    torch.save(checkpoint, path)
    return checkpoint


def test_frozen_parts_named_in_the_config_are_left_out_and_come_back(pretrained, tmp_path):
    cfg, files = pretrained
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():  # "training": change trainable weights only
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    ckpt = save_through_hook(model, cfg, tmp_path / 'iter_4.pth')
    keys = set(ckpt['state_dict'])
    assert not any(k.startswith(('backbone.vfm.', 'backbone.vlm.', 'text_encoder.'))
                   for k in keys)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable <= keys  # everything that trains is there, plus the BN statistics
    assert 'backbone.fpn1.1.running_mean' in keys
    assert ckpt['meta']['frozen_weights_from']['backbone.vlm.']['file'] == str(files['vlm'])
    # a new model from the same config (towers from the files) + the checkpoint = the model
    fresh = MODELS.build(cfg.model).eval()
    require_matching_checkpoint(fresh, str(tmp_path / 'iter_4.pth'), cfg)
    load_checkpoint(fresh, str(tmp_path / 'iter_4.pth'), map_location='cpu', strict=False)
    img = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(fresh.encode_decode(img, [{}]), model.encode_decode(img, [{}]))
    # without the files the checkpoint cannot be completed: the error names both
    bare = Config(dict(model=tiny_mfuser_cfg()))
    with pytest.raises(CheckpointError) as err:
        require_matching_checkpoint(MODELS.build(bare.model), str(tmp_path / 'iter_4.pth'), bare)
    assert 'iter_4.pth' in str(err.value) and 'model.backbone.vlm.checkpoint' in str(err.value)
    assert str(files['vlm']) in str(err.value)


def test_random_towers_and_keep_frozen_save_the_whole_model(pretrained, tmp_path):
    cfg, _ = pretrained
    model = MODELS.build(cfg.model)
    full = save_through_hook(model, cfg, tmp_path / 'full.pth', keep_frozen=True)
    assert set(full['state_dict']) == set(model.state_dict())
    random_towers = Config(dict(model=tiny_mfuser_cfg()))  # no files: nothing to rebuild from
    model = MODELS.build(random_towers.model)
    kept = save_through_hook(model, random_towers, tmp_path / 'demo.pth')
    assert set(kept['state_dict']) == set(model.state_dict())
    assert 'frozen_weights_from' not in kept['meta']


def test_a_part_that_trains_is_never_left_out(pretrained, tmp_path):
    cfg, _ = pretrained
    model = MODELS.build(cfg.model)
    model.backbone.vlm.blocks[0].norm1.weight.requires_grad_(True)  # a user unfroze it
    ckpt = save_through_hook(model, cfg, tmp_path / 'x.pth')
    assert any(k.startswith('backbone.vlm.') for k in ckpt['state_dict'])
    assert not any(k.startswith('backbone.vfm.') for k in ckpt['state_dict'])


def test_test_runner_converts_an_official_file_once_and_loads_it_strictly(tmp_path, monkeypatch):
    """tools/test.py's road (mfuser.apis.test_runner): an official checkpoint is read and
    converted once, its towers make the config's files unnecessary, and the model ends up
    with exactly its weights. The official key tables are stubbed: a marker key makes the
    demo model's own state dict 'official'."""
    import os.path as osp

    import mfuser.models.official_release as release
    from mfuser.apis import load_config, test_runner
    demo = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs',
                    'mfuser_tiny_synthetic.py')
    source = MODELS.build(Config.fromfile(demo).model)
    state = {k: v + 1 if v.is_floating_point() else v for k, v in source.state_dict().items()}
    path = tmp_path / 'official.pth'
    official = dict(state, official_marker=torch.ones(1))
    torch.save(dict(meta=dict(CLASSES=['a']), state_dict=official), path)
    conversions = []

    def convert(official, variant=None):
        conversions.append(len(official))
        return {k: v for k, v in official.items() if k != 'official_marker'}, ['official_marker'], \
            'eva02'

    monkeypatch.setattr(release, 'is_official_state_dict', lambda keys: 'official_marker' in keys)
    monkeypatch.setattr(release, 'convert_official_state_dict', convert)
    cfg = load_config(demo, {'model.backbone.vlm.checkpoint': str(tmp_path / 'absent.pt')},
                      work_dir=str(tmp_path / 'wd'))
    runner = test_runner(cfg, str(path), preflight=False)
    assert len(conversions) == 1
    assert cfg.model.backbone.vlm.checkpoint is None  # the checkpoint holds that tower
    loaded = runner.model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, msg=key)
