# G -> C/B/M (GTAV to Cityscapes, BDD100K, Mapillary).
# Source: train_gta_rcs with rare-class sampling. Targets evaluated in ONE run (dg_common.py).
# Test protocol: tqdm/MFuser, as the release evaluates: Cityscapes and Mapillary resized to
# 2048x1024 (keep ratio; full-resolution Mapillary files), BDD100K at its native 1280x720.
_base_ = ['./dg_common.py', './gta.py', './cityscapes.py', './bdd100k.py', './mapillary.py']
train_dataloader = dict(dataset={{_base_.train_gta_rcs}})
val_dataloader = dict(
    dataset=dict(
        datasets=[{{_base_.val_cityscapes}}, {{_base_.val_bdd100k}}, {{_base_.val_mapillary}}],
        domains=['cityscapes', 'bdd100k', 'mapillary']))
# single images (mmseg's inference_model / MMSegInferencer, tools/infer.py): the first target's
# test pipeline with mmcv's loaders (those APIs look them up by these names)
test_pipeline = [dict(t, type=t['type'].replace('LoadChecked', 'Load'))
                 for t in _base_.cityscapes_test_pipeline]
val_dataloader['dataset']['pipeline'] = test_pipeline
test_dataloader = val_dataloader
