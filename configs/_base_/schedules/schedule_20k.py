# MFuser recipe (spec section 6): AdamW 1e-4, wd 1e-5, 1500-iteration linear warm-up from
# 1e-6, then poly (power 0.9, min lr 1e-6) to 20k iterations; checkpoint every 2000;
# evaluate at the end. The frozen text encoder gets lr x0; level/query embeddings and
# norms get no weight decay.
iters = 20000
warmup_iters = 1500
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-5),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        custom_keys={
            'text_encoder': dict(lr_mult=0.0, decay_mult=0.0),
            'norm': dict(decay_mult=0.0),
            'level_embed': dict(decay_mult=0.0),
            'level_encoding': dict(decay_mult=0.0),
            'query_embed': dict(decay_mult=0.0),
            'text_pos_embed': dict(decay_mult=0.0),
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', power=0.9, eta_min=1e-6, by_epoch=False, begin=warmup_iters,
         end=iters),
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
custom_hooks = [dict(type='TrainingCurvesHook')]
