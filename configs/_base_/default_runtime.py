# Runtime shared by all MFuser configs (mmseg 1.x / mmengine conventions).
default_scope = 'mmseg'
custom_imports = dict(imports=['mfuser', 'mfuser.engine.safe_loading'], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # nccl on GPUs; CPU multi-process runs use --cfg-options env_cfg.dist_cfg.backend=gloo
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer',
                  alpha=0.5)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=42)
tta_model = dict(type='SegTTAModel')
