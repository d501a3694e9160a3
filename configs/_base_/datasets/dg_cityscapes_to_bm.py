# C -> B/M (Cityscapes to BDD100K, Mapillary).
# Source: train_cityscapes_rcs with rare-class sampling. Targets evaluated in ONE run through
# MultiDomainDataset + DGIoUMetric (per-domain mIoU / per-class IoU, mean over domains, a table
# in the log and <work_dir>/<timestamp>/dg_results.json; metrics '<domain>/mIoU', 'mean/mIoU').
# Test protocol: tqdm/MFuser, as the release evaluates: Cityscapes and Mapillary resized to
# 2048x1024 (keep ratio; full-resolution Mapillary files), BDD100K at its native 1280x720.
_base_ = ['./cityscapes.py', './bdd100k.py', './mapillary.py']
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset={{_base_.train_cityscapes_rcs}})
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='MultiDomainDataset',
        datasets=[{{_base_.val_bdd100k}}, {{_base_.val_mapillary}}],
        domains=['bdd100k', 'mapillary']))
# single images (mmseg's inference_model / MMSegInferencer, tools/infer.py): the first target's
# test pipeline
test_pipeline = {{_base_.bdd100k_test_pipeline}}
val_dataloader['dataset']['pipeline'] = test_pipeline
test_dataloader = val_dataloader
val_evaluator = dict(
    type='DGIoUMetric',
    protocol='tqdm/MFuser (as released): Cityscapes and Mapillary at 2048x1024 (keep ratio), '
    'BDD100K at 1280x720')
test_evaluator = val_evaluator
