# MFuser recipe as released (mmcv 1.x configs/_base_/schedules/schedule_20k.py and the
# optimizer of configs/mfuser/mfuser_eva_vit-l_1e-4_20k-*.py): AdamW lr 1e-4, weight decay
# 1e-5; poly (power 0.9, min lr 1e-6) over all 20k iterations, multiplied during the first
# 1500 by a linear warm-up from 1e-6 (mmcv 1.x semantics: lr(1500) = 9.33e-5); checkpoint every
# 2000 iterations; evaluate at the end.
# Weight-decay / lr groups by parameter-NAME substring, exactly the release's custom_keys
# (mmengine matches them like mmcv 1.x: longest key first, substring of the full name): no
# norm_decay_mult, so e.g. the fpn1 BatchNorm and the pixel decoder's GroupNorms ('gn') decay.
iters = 20000
warmup_iters = 1500
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-5),
    paramwise_cfg=dict(
        custom_keys={
            'text_encoder': dict(lr_mult=0.0),
            'level_embed': dict(decay_mult=0.0),
            'query_embed': dict(decay_mult=0.0),
            'norm': dict(decay_mult=0.0),
        }))
param_scheduler = [
    dict(type='PolyLRWithLinearWarmup', power=0.9, eta_min=1e-6, warmup_iters=warmup_iters,
         warmup_ratio=1e-6, begin=0, end=iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2000, max_keep_ckpts=3,
                    save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
# Checkpoints hold what trains (~0.46 GB of weights at full size, not 3.4 GB): the frozen towers
# and text encoder come from the pretrained files the config names whenever a checkpoint is
# loaded. keep_frozen=True saves the whole model (a self-contained file).
custom_hooks = [dict(type='TrainingCurvesHook'), dict(type='TrainableCheckpointHook',
                                                      keep_frozen=False)]
