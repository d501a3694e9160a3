"""The shipped configs carry the RELEASE's recipe, checked number by number against the
official configs (github devinxzhang/MFuser: configs/mfuser/mfuser_{eva,clip,siglip}_vit-l_
1e-4_20k-g2c-512.py, configs/_base_/schedules/schedule_20k.py, configs/_base_/datasets/
gta2{city,bdd,map}-512.py, city2bdd-512.py), and the LR schedule / training resize behave as
mmcv 1.x / mmseg 0.x computed them."""
import json
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from resolved_configs import SNAPSHOTS, leaf_configs, resolved
from shared_files import shared_path

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

# The release's numbers, copied from its configs (not from ours).
RELEASE_OPTIM = {  # optimizer = dict(type='AdamW', lr=1e-4, weight_decay=..., paramwise_cfg=...)
    'eva02': (1e-5, {'text_encoder': dict(lr_mult=0.0), 'level_embed': dict(decay_mult=0.0),
                     'query_embed': dict(decay_mult=0.0), 'norm': dict(decay_mult=0.0)}),
    'clip': (1e-4, {'text_encoder': dict(lr_mult=0.0), 'norm': dict(decay_mult=0.0)}),
    'siglip': (1e-5, {'text_encoder': dict(lr_mult=0.0), 'level_embed': dict(decay_mult=0.0),
                      'query_embed': dict(decay_mult=0.0), 'norm': dict(decay_mult=0.0)}),
}
RELEASE_LR = dict(policy='poly', power=0.9, min_lr=1e-6, warmup_iters=1500, warmup_ratio=1e-6,
                  max_iters=20000, base_lr=1e-4)
RELEASE_RCS = dict(min_pixels=3000, class_temp=100, min_crop_ratio=0.5)
RELEASE_TEST_SCALE = {'cityscapes': (2048, 1024), 'bdd100k': (1280, 720),
                      'mapillary': (2048, 1024)}
RELEASE_CONTEXTS = {'eva02': (8, 5), 'clip': (5, 5), 'siglip': (5, 5)}  # (n_ctx, name length)


def load(name):
    return Config.fromfile(osp.join(REPO, 'configs', name))


def mmcv1_poly_lr(i: int) -> float:
    """mmcv 1.x PolyLrUpdaterHook + linear warm-up for iteration i (its get_lr/get_warmup_lr,
    re-stated from mmcv/runner/hooks/lr_updater.py 1.5.1)."""
    r = RELEASE_LR
    coeff = (1 - i / r['max_iters']) ** r['power']
    regular = (r['base_lr'] - r['min_lr']) * coeff + r['min_lr']
    if i < r['warmup_iters']:
        k = (1 - i / r['warmup_iters']) * (1 - r['warmup_ratio'])
        return regular * (1 - k)
    return regular


@pytest.mark.parametrize('name, variant', [
    ('mfuser_eva02_gta.py', 'eva02'), ('mfuser_eva02_cityscapes.py', 'eva02'),
    ('mfuser_clip_gta.py', 'clip'), ('mfuser_clip_cityscapes.py', 'clip'),
    ('mfuser_siglip_gta.py', 'siglip'), ('mfuser_siglip_cityscapes.py', 'siglip')])
def test_recipe_numbers_are_the_release(name, variant):
    cfg = load(name)
    assert cfg.custom_imports['imports'] == ['mfuser', 'mfuser.engine.safe_loading']
    opt = cfg.optim_wrapper.optimizer
    decay, keys = RELEASE_OPTIM[variant]
    assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', 1e-4, decay)
    paramwise = cfg.optim_wrapper.paramwise_cfg
    assert {k: dict(v) for k, v in paramwise.custom_keys.items()} == keys
    assert set(paramwise) == {'custom_keys'}  # no norm_decay_mult etc.: groups by name only
    (sched, ) = cfg.param_scheduler
    assert sched.type == 'PolyLRWithLinearWarmup'
    assert (sched.power, sched.eta_min, sched.warmup_iters, sched.warmup_ratio, sched.begin,
            sched.end) == (0.9, 1e-6, 1500, 1e-6, 0, 20000)
    assert cfg.train_cfg.max_iters == 20000
    assert cfg.train_dataloader.batch_size == 2  # samples_per_gpu=2
    rcs = cfg.train_dataloader.dataset
    assert (rcs.type, rcs.min_pixels, rcs.temperature, rcs.min_crop_ratio) == (
        'RareClassSampledDataset', RELEASE_RCS['min_pixels'], RELEASE_RCS['class_temp'],
        RELEASE_RCS['min_crop_ratio'])
    steps = [t['type'] for t in rcs.dataset.pipeline]
    assert steps == ['LoadCheckedImageFromFile', 'LoadCheckedAnnotations', 'RandomRatioResize',
                     'RandomCrop', 'RandomFlip', 'PhotoMetricDistortion', 'PackSegInputs']
    by_type = {t['type']: t for t in rcs.dataset.pipeline}
    assert by_type['RandomRatioResize'].ratio_range == (0.5, 2.0)
    assert by_type['RandomCrop'].crop_size == (512, 512)
    assert by_type['RandomCrop'].cat_max_ratio == 0.75 and by_type['RandomFlip'].prob == 0.5
    mv = cfg.test_dataloader.dataset
    for domain, ds in zip(mv.domains, mv.datasets):
        resize = next(t for t in ds.pipeline if t['type'] == 'Resize')
        assert (tuple(resize.scale), resize.keep_ratio) == (RELEASE_TEST_SCALE[domain], True)
    assert cfg.test_evaluator.protocol.startswith('tqdm/MFuser')
    m = cfg.model
    assert m.test_cfg == dict(mode='slide', crop_size=(512, 512), stride=(341, 341))
    assert (m.n_ctx, m.text_encoder.name_context_length) == RELEASE_CONTEXTS[variant]
    assert m.text_encoder.n_ctx == m.n_ctx
    assert tuple(m.backbone.out_indices) == (7, 11, 15, 23)
    assert m.backbone.adapter == dict(type='MVFuser', d_state=16, d_conv=3, expand=1)
    assert m.loss_vl == dict(type='CrossEntropyLoss', loss_weight=1.0, avg_non_ignore=False)
    head = m.decode_head
    assert head.pixel_decoder.encoder.num_layers == 6
    assert head.pixel_decoder.encoder.post_norm is True
    assert head.pixel_decoder.encoder.layer_cfg.ffn_cfg.feedforward_channels == 2048
    assert head.transformer_decoder.num_layers == 9
    assert head.transformer_decoder.layer_cfg.ffn_cfg.feedforward_channels == 2048
    assert (head.loss_cls.loss_weight, head.no_object_weight) == (2.0, 0.1)
    assert head.loss_mask.loss_weight == 5.0 and head.loss_dice.loss_weight == 5.0
    assert head.train_cfg == dict(num_points=12544, oversample_ratio=3.0,
                                  importance_sample_ratio=0.75)
    assert head.get('mmdet_init', False) is False  # the release never calls the head's init


def test_lr_schedule_is_mmcv1_poly_times_linear_warmup():
    from mmengine.optim import OptimWrapper
    from mmseg.registry import PARAM_SCHEDULERS

    import mfuser  # noqa: F401
    cfg = load('mfuser_eva02_gta.py')
    param = torch.nn.Parameter(torch.zeros(1))
    frozen = torch.nn.Parameter(torch.zeros(1))  # a text-encoder group with lr_mult 0
    optim = torch.optim.AdamW([dict(params=[param], lr=1e-4), dict(params=[frozen], lr=0.0)])
    wrapper = OptimWrapper(optim)
    sched = PARAM_SCHEDULERS.build(dict(cfg.param_scheduler[0], optimizer=wrapper))
    lrs, frozen_lrs = [], []
    for _ in range(20000):
        lrs.append(optim.param_groups[0]['lr'])
        frozen_lrs.append(optim.param_groups[1]['lr'])
        optim.step()
        sched.step()
    expected = np.array([mmcv1_poly_lr(i) for i in range(20000)])
    np.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=0)
    # mmcv 1.x's min_lr is absolute: a base-0 group follows (0 - 1e-6) * coeff + 1e-6 (the
    # release's frozen text encoder gets that tiny lr too, harmlessly: no gradients)
    coeff = (1 - np.arange(20000) / 20000) ** 0.9
    warm = np.where(np.arange(20000) < 1500,
                    1 - (1 - np.arange(20000) / 1500) * (1 - 1e-6), 1.0)
    np.testing.assert_allclose(frozen_lrs, (-1e-6 * coeff + 1e-6) * warm, rtol=1e-9, atol=1e-18)
    assert abs(lrs[1500] - 9.33e-5) < 5e-8  # the number
    assert lrs[1499] < lrs[1500] > lrs[1501]  # the warm-up peak
    # resuming from a state dict continues the same curve
    sched2 = PARAM_SCHEDULERS.build(dict(cfg.param_scheduler[0], optimizer=wrapper))
    sched2.load_state_dict(sched.state_dict())
    assert sched2.factor(1e-4, 777) == pytest.approx(mmcv1_poly_lr(777), rel=1e-12)


def test_ratio_resize_is_relative_to_the_image_size_like_mmseg0x():
    """mmseg 0.x Resize(ratio_range=(0.5, 2)) without img_scale on a real GTAV frame
    (1914x1052): r ~ U(0.5, 2) by np.random.random_sample, target (int(w r), int(h r)),
    mmcv 1.x keep-ratio rescale (scale factor min(long/long, short/short), rounded +0.5)."""
    from mmcv.transforms import LoadImageFromFile

    from mfuser.datasets import RandomRatioResize
    path = shared_path('data', 'real', 'gtav_image_only', 'images')
    files = sorted(f for f in __import__('os').listdir(path) if f.endswith('.png'))
    if not files:
        pytest.fail(f'no real GTAV sample image in {path}')
    img = LoadImageFromFile()(dict(img_path=osp.join(path, files[0])))
    h, w = img['img'].shape[:2]
    transform = RandomRatioResize(ratio_range=(0.5, 2.0))
    for seed in range(5):
        np.random.seed(seed)
        out = transform(dict(img=img['img'].copy(), img_shape=(h, w)))
        np.random.seed(seed)
        r = np.random.random_sample() * 1.5 + 0.5
        sw, sh = int(w * r), int(h * r)
        factor = min(max(sw, sh) / max(h, w), min(sw, sh) / min(h, w))
        expected = (int(h * factor + 0.5), int(w * factor + 0.5))
        assert out['img'].shape[:2] == expected, (seed, r)
    with pytest.raises(ValueError, match='ratio_range'):
        RandomRatioResize(ratio_range=(0, 2))


def test_rein_protocol_configs_say_so_and_keep_their_scales():
    for name, targets in (('dg_gta_to_cbm_rein.py', 3), ('dg_cityscapes_to_bm_rein.py', 2)):
        cfg = load(osp.join('_base_', 'datasets', name))
        assert cfg.test_evaluator.protocol.startswith('Rein/SoMA')
        scales = [tuple(next(t for t in d.pipeline if t['type'] == 'Resize').scale)
                  for d in cfg.test_dataloader.dataset.datasets]
        assert len(scales) == targets
        assert scales[-2:] == [(1280, 720), (1024, 512)]  # BDD100K, half-res Mapillary
        mapillary = cfg.test_dataloader.dataset.datasets[-1]
        assert 'half' in str(mapillary.data_prefix)
    cfg = load(osp.join('_base_', 'datasets', 'dg_synthia_to_cbm.py'))
    assert cfg.test_evaluator.protocol.startswith('tqdm/MFuser')


# ------------------------------------------------------------------ refactorings keep the configs
# The intended differences from the snapshot taken before the config refactoring (issue 22):
# 1. the data sets' pipelines name the checked loaders (no class swapping at build time). The
#    single-image inference pipeline (top-level ``test_pipeline``, and the MultiDomainDataset's
#    copy of it that MMSegInferencer reads) keeps mmcv's names: mmseg's inference APIs look the
#    loaders up by those names.
INTENDED_TYPES = {'LoadImageFromFile': 'LoadCheckedImageFromFile',
                  'LoadAnnotations': 'LoadCheckedAnnotations'}
# 2. top-level helper variables that a shared base now defines once (no builder reads them;
#    their values in ``model`` are compared in full). A leaf may have them newly.
INTENDED_NEW_HELPERS = {'n_ctx', 'dinov2_checkpoint', 'eva02_checkpoint'}


def _checked_loaders(value, key: str = ''):
    """``value`` with the INTENDED_TYPES renames in every pipeline of a data set (a list under a
    key with 'pipeline' in its name; not the pipeline of a MultiDomainDataset)."""
    if isinstance(value, dict):
        multi_domain = value.get('type') == 'MultiDomainDataset'
        return {k: v if multi_domain and k == 'pipeline' else _checked_loaders(v, k)
                for k, v in value.items()}
    if isinstance(value, list):
        if 'pipeline' in key:
            value = [dict(t, type=INTENDED_TYPES.get(t['type'], t['type']))
                     if isinstance(t, dict) else t for t in value]
        return [_checked_loaders(v, key) for v in value]
    return value


def _with_intended_edits(snapshot: dict) -> dict:
    """The snapshot of a resolved config with the INTENDED_TYPES renames (see above)."""
    edited = _checked_loaders(snapshot)
    if 'test_pipeline' in snapshot:  # single images: mmcv's loaders, as before
        edited['test_pipeline'] = snapshot['test_pipeline']
    return edited


def _differences(old, new, where: str = '') -> list[str]:
    """Where two resolved configs (plain JSON values) differ, one line per difference."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines = [f'{where}.{k}: only in the snapshot' for k in old.keys() - new.keys()]
        lines += [f'{where}.{k}: new' for k in new.keys() - old.keys()]
        for k in sorted(old.keys() & new.keys()):
            lines += _differences(old[k], new[k], f'{where}.{k}')
        return lines
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [line for i, (a, b) in enumerate(zip(old, new))
                for line in _differences(a, b, f'{where}[{i}]')]
    return [] if old == new else [f'{where}: {old!r} -> {new!r}']


@pytest.mark.parametrize('name', leaf_configs())
def test_resolved_config_is_the_snapshot_with_the_intended_edits(name):
    """Every leaf config resolves to its snapshot (tests/data/resolved_configs, taken before
    the refactoring of issue 22) with exactly the intended edits: the data sets' pipelines name
    LoadCheckedImageFromFile / LoadCheckedAnnotations instead of mmcv's LoadImageFromFile /
    LoadAnnotations (INTENDED_TYPES; not the single-image inference pipeline), and the helper
    variables of INTENDED_NEW_HELPERS may appear at the top level."""
    with open(osp.join(SNAPSHOTS, name.replace('.py', '.json'))) as f:
        expected = _with_intended_edits(json.load(f))
    actual = resolved(name)
    for key in INTENDED_NEW_HELPERS - expected.keys():
        actual.pop(key, None)
    diff = _differences(expected, actual)
    assert not diff, f'{name} differs from its snapshot:\n' + '\n'.join(diff)


def test_leaf_configs_take_custom_imports_from_the_runtime_base():
    for name in leaf_configs():
        with open(osp.join(REPO, 'configs', name)) as f:
            text = f.read()
        assert 'custom_imports' not in text, name
        assert "'./_base_/default_runtime.py'" in text, name  # where custom_imports is set
