# ACDC (target): fog / night / rain / snow, 1920x1080. Layout as shipped (data/README.md):
# data/acdc/rgb_anon/{fog,night,rain,snow}/{train,val,test}/<sequence>/*_rgb_anon.png and
# data/acdc/gt/{condition}/{train,val}/<sequence>/*_gt_labelTrainIds.png (train IDs already; no
# converter). The test split has no labels: it is predicted for the benchmark server.
# Test protocol: ACDC at its native 1920x1080 (the release's rule for every target: its native
# or 2048x1024 scale, keep ratio; Rein's ACDC configs use the same 1920x1080), slide 512 /
# stride 341 from the model's test_cfg.
acdc_type = 'ACDCDataset'
acdc_root = 'data/acdc/'
acdc_test_pipeline = [
    dict(type='LoadCheckedImageFromFile'),
    dict(type='Resize', scale=(1920, 1080), keep_ratio=True),
    dict(type='LoadCheckedAnnotations'),
    dict(type='PackSegInputs'),
]
# the unlabelled test split (benchmark submission): no annotations to load
acdc_submission_pipeline = [
    dict(type='LoadCheckedImageFromFile'),
    dict(type='Resize', scale=(1920, 1080), keep_ratio=True),
    dict(type='PackSegInputs'),
]
val_acdc_fog = dict(
    type=acdc_type,
    data_root=acdc_root,
    condition='fog',
    split='val',
    data_prefix=dict(img_path='rgb_anon/fog/val', seg_map_path='gt/fog/val'),
    pipeline=acdc_test_pipeline)
val_acdc_night = dict(
    val_acdc_fog,
    condition='night',
    data_prefix=dict(img_path='rgb_anon/night/val', seg_map_path='gt/night/val'))
val_acdc_rain = dict(
    val_acdc_fog,
    condition='rain',
    data_prefix=dict(img_path='rgb_anon/rain/val', seg_map_path='gt/rain/val'))
val_acdc_snow = dict(
    val_acdc_fog,
    condition='snow',
    data_prefix=dict(img_path='rgb_anon/snow/val', seg_map_path='gt/snow/val'))
test_acdc_fog = dict(
    type=acdc_type,
    data_root=acdc_root,
    condition='fog',
    split='test',
    data_prefix=dict(img_path='rgb_anon/fog/test'),
    pipeline=acdc_submission_pipeline)
test_acdc_night = dict(
    test_acdc_fog, condition='night', data_prefix=dict(img_path='rgb_anon/night/test'))
test_acdc_rain = dict(
    test_acdc_fog, condition='rain', data_prefix=dict(img_path='rgb_anon/rain/test'))
test_acdc_snow = dict(
    test_acdc_fog, condition='snow', data_prefix=dict(img_path='rgb_anon/snow/test'))
acdc_domains = ['acdc_fog', 'acdc_night', 'acdc_rain', 'acdc_snow']
