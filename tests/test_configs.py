"""The shipped configs carry the paper's recipe (spec section 6) and swap towers cleanly."""
import os.path as osp

import pytest
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load(name):
    return Config.fromfile(osp.join(REPO, 'configs', name))


def test_gta_config_is_the_paper_recipe():
    cfg = load('mfuser_eva02_gta.py')
    assert cfg.custom_imports['imports'] == ['mfuser']
    # optimiser and schedule
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, opt.weight_decay) == ('AdamW', 1e-4, 1e-5)
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert keys['text_encoder'].lr_mult == 0.0
    for name in ('level_embed', 'query_embed', 'norm'):
        assert keys[name].decay_mult == 0.0
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end) == ('LinearLR', 1e-6, 1500)
    assert (poly.type, poly.power, poly.eta_min, poly.begin, poly.end) == (
        'PolyLR', 0.9, 1e-6, 1500, 20000)
    assert cfg.train_cfg.max_iters == 20000 and cfg.train_cfg.val_interval == 20000
    assert cfg.default_hooks.checkpoint.interval == 2000
    # data: batch 2, rare-class sampling, the augmentation chain, multi-domain test
    assert cfg.train_dataloader.batch_size == 2
    rcs = cfg.train_dataloader.dataset
    assert (rcs.type, rcs.min_pixels, rcs.min_crop_ratio) == ('RareClassSampledDataset', 3000,
                                                                0.5)
    steps = {t['type']: t for t in rcs.dataset.pipeline}
    assert steps['RandomResize'].ratio_range == (0.5, 2.0)
    assert steps['RandomCrop'].crop_size == (512, 512)
    assert steps['RandomCrop'].cat_max_ratio == 0.75
    assert steps['RandomFlip'].prob == 0.5 and 'PhotoMetricDistortion' in steps
    targets = [d.type for d in cfg.test_dataloader.dataset.datasets]
    assert targets == ['CityscapesDGDataset', 'BDD100KDGDataset', 'MapillaryDataset']
    assert cfg.test_evaluator.type == 'DGIoUMetric'
    # model: towers, adapters after every block, heads and losses, slide inference
    m = cfg.model
    assert m.backbone.vfm.name == 'vit_large_patch14_dinov2'
    assert m.backbone.vlm.name == 'eva02_large_patch14_clip_336'
    assert m.backbone.adapter.type == 'MVFuser' and m.backbone.adapter.d_state == 16
    assert tuple(m.backbone.out_indices) == (7, 11, 15, 23)
    assert m.text_encoder.n_ctx == 8
    head = m.decode_head
    assert head.transformer_decoder.num_layers == 9
    assert (head.loss_cls.loss_weight, head.no_object_weight) == (2.0, 0.1)
    assert head.loss_mask.loss_weight == 5.0 and head.loss_dice.loss_weight == 5.0
    assert head.train_cfg == dict(num_points=12544, oversample_ratio=3.0,
                                  importance_sample_ratio=0.75)
    assert m.test_cfg == dict(mode='slide', crop_size=(512, 512), stride=(341, 341))


@pytest.mark.parametrize('name, vlm, text_model', [
    ('mfuser_clip_gta.py', 'vit_large_patch14_clip_quickgelu_336', 'ViT-L-14-336-quickgelu'),
    ('mfuser_siglip_gta.py', 'vit_large_patch16_siglip_384', 'ViT-L-16-SigLIP-384'),
])
def test_vlm_swaps_change_the_tower_and_its_text_model_together(name, vlm, text_model):
    cfg = load(name)
    assert cfg.model.backbone.vfm.name == 'vit_large_patch14_dinov2'
    assert cfg.model.backbone.vlm.name.startswith(vlm)
    assert cfg.model.text_encoder.model_name == text_model
    # the embedding width E follows the VLM in every place that uses it
    e = cfg.model.decode_head.text_dim
    assert cfg.model.context_decoder.visual_dim == e


def test_cityscapes_source_config_targets_bdd_and_mapillary():
    cfg = load('mfuser_eva02_cityscapes.py')
    assert cfg.train_dataloader.dataset.type == 'RareClassSampledDataset'
    assert cfg.train_dataloader.dataset.dataset.type == 'CityscapesDGDataset'
    targets = [d.type for d in cfg.test_dataloader.dataset.datasets]
    assert targets == ['BDD100KDGDataset', 'MapillaryDataset']


@pytest.mark.parametrize('name, protocol', [
    ('dg_gta_to_cbm.py', 'tqdm/MFuser'), ('dg_gta_to_cbm_rein.py', 'Rein/SoMA'),
    ('dg_cityscapes_to_bm.py', 'tqdm/MFuser'), ('dg_cityscapes_to_bm_rein.py', 'Rein/SoMA'),
    ('dg_synthia_to_cbm.py', 'tqdm/MFuser')])
def test_each_target_set_names_its_evaluation_protocol(name, protocol):
    cfg = load(osp.join('_base_', 'datasets', name))
    assert cfg.test_evaluator.protocol.startswith(protocol)
    if protocol == 'Rein/SoMA':  # half-resolution Mapillary copies, 1024x512
        mapillary = cfg.test_dataloader.dataset.datasets[-1]
        assert 'half' in str(mapillary.data_prefix) or 'half' in str(mapillary.data_root)
