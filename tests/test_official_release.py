"""Released MFuser checkpoints map onto this project's models key by key (all three variants).

The official key tables in ../shared/reference (made from the official constructors) give
every released key with its shape; the project models are built on the 'meta' device (no
memory, under a second each). Without ../shared (a plain clone) the tests skip, under CI they
fail (tests/shared_files.py).
"""
import json
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from shared_files import shared_path
from tests_official_helpers import CONFIGS, build_meta

from mfuser.models.official_release import (
    DROPPED,
    DROPPED_SIGLIP,
    convert_official_state_dict,
    detect_variant,
    is_official_state_dict,
)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TABLES = {'eva02': 'mfuser_eva02_official.keys.json', 'clip': 'mfuser_clip_official.keys.json',
          'siglip': 'mfuser_siglip_official.keys.json'}
# What each variant's official checkpoint holds that the project model does not (and why it is
# dropped) - anything else unmatched is a failure.
EXPECTED_DROPS = {
    'eva02': {r'^random_text$', r'^text_encoder\.attn_mask$', r'^backbone\.rope\.',
              r'^backbone\.blocks\.\d+\.attn\.rope\.', r'^backbone\.dinov2\.mask_token$'},
    'clip': {r'^backbone\.dinov2\.mask_token$'},
    'siglip': {r'^backbone\.embeddings\.position_ids$', r'^text_encoder\.embeddings\.position_ids$',
               r'^backbone\.dinov2\.mask_token$', r'^backbone\.adapter_proj[123]\.'},
}


def key_table(variant):
    with open(shared_path('reference', TABLES[variant])) as f:
        return json.load(f)['keys']


def meta_official(variant, mmcv_file=True):
    """The official state dict as meta tensors (names, shapes, dtypes; no memory). With
    ``mmcv_file`` it also holds the non-persistent buffers mmcv 1.x saved anyway."""
    out = {}
    for key, info in key_table(variant).items():
        if not info.get('in_state_dict', True) and not mmcv_file:
            continue
        out[key] = torch.empty(info['shape'], dtype=getattr(torch, info['dtype']),
                               device='meta')
    return out


@pytest.mark.parametrize('variant', ['eva02', 'clip', 'siglip'])
def test_every_official_key_maps_to_a_project_key_of_the_same_shape(variant):
    official = meta_official(variant)
    assert detect_variant(official) == variant and is_official_state_dict(official)
    converted, dropped, got_variant = convert_official_state_dict(official)
    assert got_variant == variant
    model_sd = build_meta(variant).state_dict()
    # every project key is covered, with the right shape
    missing = sorted(set(model_sd) - set(converted))
    unexpected = sorted(set(converted) - set(model_sd))
    reshaped = [k for k in converted if k in model_sd and converted[k].shape != model_sd[k].shape]
    assert not missing and not unexpected and not reshaped, (missing[:5], unexpected[:5],
                                                             reshaped[:5])
    # every official key is converted or dropped for a documented reason, nothing else
    drops = [re.compile(p) for p in EXPECTED_DROPS[variant]]
    assert all(any(p.match(k) for p in drops) for k in dropped), sorted(dropped)[:5]
    assert all(any(p.match(k) for k in dropped) for p in drops)
    documented = [re.compile(p) for p, _ in DROPPED + DROPPED_SIGLIP]
    assert all(any(p.match(k) for p in documented) and why for k, why in dropped.items())
    n_official_params = sum(v.numel() for k, v in official.items()
                            if key_table(variant)[k]['kind'] == 'parameter')
    n_converted = sum(v.numel() for k, v in converted.items() if not k.endswith(
        ('running_mean', 'running_var', 'num_batches_tracked')))
    n_dropped = sum(official[k].numel() for k in dropped if key_table(variant)[k]['kind'] ==
                    'parameter')
    assert n_converted + n_dropped == n_official_params


@pytest.mark.parametrize('variant', ['eva02', 'clip', 'siglip'])
def test_trainable_and_frozen_parts_are_the_releases(variant):
    """requires_grad of every converted key equals the official constructor's."""
    table = key_table(variant)
    model = build_meta(variant)
    params = dict(model.named_parameters())
    for key, info in table.items():
        if info['kind'] != 'parameter':
            continue
        if variant == 'siglip' and re.match(r'backbone\.encoder\.layers\.\d+\.self_attn\.'
                                            r'[qkv]_proj|text_encoder\.encoder\.layers', key):
            continue  # fused q/k/v: frozen towers, checked through the fused keys below
        converted, dropped, _ = convert_official_state_dict(
            {key: torch.empty(info['shape'], device='meta')}, variant)
        if key in dropped:
            continue
        for name in converted:  # one key, or a fused projection split in two (SigLIP pool)
            assert params[name].requires_grad == info['requires_grad'], key
    frozen = [n for n, p in params.items() if not p.requires_grad]
    assert all(n.startswith(('backbone.vfm.', 'backbone.vlm.', 'text_encoder.'))
               for n in frozen)


def mmcv1_param_group(name, base_lr, base_wd, custom_keys):
    """mmcv 1.x DefaultOptimizerConstructor.add_params for custom_keys only (re-stated from
    mmcv/runner/optimizer/default_constructor.py 1.5.1): keys sorted alphabetically, then by
    length (longest first); the first key that is a substring of the full name decides."""
    for key in sorted(sorted(custom_keys), key=len, reverse=True):
        if key in name:
            mult = custom_keys[key]
            return base_lr * mult.get('lr_mult', 1.0), base_wd * mult.get('decay_mult', 1.0)
    return base_lr, base_wd


@pytest.mark.parametrize('variant', ['eva02', 'clip', 'siglip'])
def test_weight_decay_groups_match_the_release_for_every_trainable_weight(variant):
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(osp.join(REPO, 'configs', CONFIGS[variant]))
    model = build_meta(variant)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    ours = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            ours[id(p)] = (group['lr'], group['weight_decay'])
    params = dict(model.named_parameters())
    base_lr, base_wd = cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.optimizer.weight_decay
    keys = {k: dict(v) for k, v in cfg.optim_wrapper.paramwise_cfg.custom_keys.items()}
    checked = 0
    for key, info in key_table(variant).items():
        if info['kind'] != 'parameter' or not info['requires_grad']:
            continue
        converted, dropped, _ = convert_official_state_dict(
            {key: torch.empty(info['shape'], device='meta')}, variant)
        if key in dropped:
            continue
        (name, ) = converted
        expected = mmcv1_param_group(key, base_lr, base_wd, keys)  # on the OFFICIAL name
        assert ours[id(params[name])] == pytest.approx(expected), (key, name)
        checked += 1
    assert checked > 600  # every adapter, neck, MTEnhancer and head weight


def test_project_checkpoints_are_not_taken_for_official_ones():
    official = meta_official('eva02')
    converted, _, _ = convert_official_state_dict(official)
    assert not is_official_state_dict(converted)
    assert not is_official_state_dict({'state': torch.zeros(1)})
    with pytest.raises(ValueError, match='not an official MFuser state dict'):
        detect_variant(['decode_head.cls_embed.weight'])


def test_converted_clip_class_token_is_the_official_embedding_added_twice():
    """The released CLIP tower adds class_embedding twice to token 0 (class_embedding +
    positional_embedding[0] + class_embedding); timm adds cls_token + pos_embed[0] once, so
    the converted cls_token must hold twice the official embedding."""
    emb, pos = torch.randn(1024), torch.randn(1025, 1024)
    converted, _, _ = convert_official_state_dict(
        {'backbone.class_embedding': emb, 'backbone.positional_embedding': pos,
         'backbone.conv1.weight': torch.zeros(1024, 3, 16, 16)}, 'clip')
    token0 = converted['backbone.vlm.cls_token'][0, 0] + converted['backbone.vlm.pos_embed'][0, 0]
    torch.testing.assert_close(token0, emb + (pos[0] + emb))
