# What every domain-generalisation protocol (dg_*.py) shares: the loaders' settings, a
# MultiDomainDataset of the targets (each a domain of its own) and the DGIoUMetric evaluator
# (per-domain mIoU / per-class IoU, mean over domains, a table in the log and
# <work_dir>/<timestamp>/dg_results.json; metrics '<domain>/mIoU', 'mean/mIoU').
# A protocol adds train_dataloader.dataset (the source, rare-class sampled), the targets
# (val_dataloader.dataset.datasets / domains) and the single-image pipeline: test_pipeline, also
# val_dataloader.dataset.pipeline, read by mmseg's inference_model / MMSegInferencer and
# tools/infer.py. The data sets' pipelines name the checked loaders (LoadCheckedImageFromFile,
# LoadCheckedAnnotations); the single-image one is the first target's test pipeline with mmcv's
# LoadImageFromFile / LoadAnnotations, the names those APIs look for (and drop / replace).
# Then it sets test_dataloader = val_dataloader (and test_evaluator = val_evaluator) again.
# The evaluator's default protocol text: tqdm/MFuser, as the release evaluates.
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='MultiDomainDataset'))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='DGIoUMetric',
    protocol='tqdm/MFuser (as released): Cityscapes and Mapillary at 2048x1024 (keep ratio), '
    'BDD100K at 1280x720')
test_evaluator = val_evaluator
