# C -> ACDC (Cityscapes to the four ACDC conditions: fog, night, rain, snow).
# Source: train_cityscapes_rcs with rare-class sampling (as dg_cityscapes_to_bm.py). Validation
# in ONE run (dg_common.py): each ACDC condition's val split as its own domain, the mean over the
# four conditions ('mean/mIoU' = 'mIoU', what save_best uses), 'acdc_all' = the four val splits
# scored as one set (the ACDC benchmark's "all conditions" number), and Cityscapes val as the
# source domain (its own column, not in the mean).
# Test protocol: the release's (tqdm/MFuser) rule for targets - ACDC at its native 1920x1080,
# Cityscapes at 2048x1024 (keep ratio), slide inference 512 / stride 341.
# ACDC test-server submission (unlabelled test split; data/README.md):
#   python tools/test.py CONFIG CKPT --format-only --out acdc_submission  (under the work dir)
# uses format_only_dataloader / format_only_evaluator below instead of the val split.
_base_ = ['./dg_common.py', './cityscapes.py', './acdc.py']
train_dataloader = dict(dataset={{_base_.train_cityscapes_rcs}})
val_dataloader = dict(
    dataset=dict(
        datasets=[
            {{_base_.val_cityscapes}}, {{_base_.val_acdc_fog}}, {{_base_.val_acdc_night}},
            {{_base_.val_acdc_rain}}, {{_base_.val_acdc_snow}}
        ],
        domains=['cityscapes', 'acdc_fog', 'acdc_night', 'acdc_rain', 'acdc_snow']))
# single images: ACDC's test pipeline with mmcv's loaders (see dg_common.py)
test_pipeline = [dict(t, type=t['type'].replace('LoadChecked', 'Load'))
                 for t in _base_.acdc_test_pipeline]
val_dataloader['dataset']['pipeline'] = test_pipeline
test_dataloader = val_dataloader
val_evaluator = dict(
    mean_domains={{_base_.acdc_domains}},
    pooled_domains=dict(acdc_all={{_base_.acdc_domains}}),
    protocol='tqdm/MFuser (as released for its targets): ACDC at its native 1920x1080, '
    'Cityscapes val (source) at 2048x1024 (keep ratio); mean over the four ACDC conditions')
test_evaluator = val_evaluator
# tools/test.py --format-only: the ACDC test split, written as the benchmark's submission
format_only_dataloader = dict(
    _base_.val_dataloader,
    dataset=dict(
        type='MultiDomainDataset',
        datasets=[
            {{_base_.test_acdc_fog}}, {{_base_.test_acdc_night}}, {{_base_.test_acdc_rain}},
            {{_base_.test_acdc_snow}}
        ],
        domains={{_base_.acdc_domains}},
        pipeline=[dict(t, type=t['type'].replace('LoadChecked', 'Load'))
                  for t in _base_.acdc_submission_pipeline]))
format_only_evaluator = dict(type='ACDCSubmissionWriter')
