# Synthetic G -> C/B/M demo data (CPU-sized). Make it first:
#   python tools/make_synthetic_data.py --out data/synthetic --convert
# Source: the game-like 'gta' domain (GTAV format), 256x128 images, random resize of 448x224 by
# [0.5, 2.0], 224 crops, rare-class sampling with min_pixels scaled to the small images.
# Targets (one run, per-domain + mean mIoU): the grey 'cityscapes', night 'bdd100k' and bright
# 'mapillary' domains, each in its real data set's format and converted like the real one.
# Padding to the crop and normalisation: the model's data preprocessor (size=synthetic_crop_size).
_base_ = ['./dg_common.py']
synthetic_root = 'data/synthetic/'
synthetic_crop_size = (224, 224)
synthetic_train_pipeline = [
    dict(type='LoadCheckedImageFromFile'),
    dict(type='LoadCheckedAnnotations'),
    dict(type='RandomResize', scale=(448, 224), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=synthetic_crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
synthetic_test_pipeline = [
    dict(type='LoadCheckedImageFromFile'),
    dict(type='Resize', scale=(448, 224), keep_ratio=True),
    dict(type='LoadCheckedAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    dataset=dict(
        type='RareClassSampledDataset',
        min_pixels=50,
        temperature=0.01,
        min_crop_ratio=0.5,
        dataset=dict(
            type='GTAVDataset',
            data_root=synthetic_root + 'gta',
            data_prefix=dict(img_path='images', seg_map_path='labels'),
            pipeline=synthetic_train_pipeline)))
val_dataloader = dict(
    num_workers=1,
    dataset=dict(
        domains=['cityscapes', 'bdd100k', 'mapillary'],
        datasets=[
            dict(
                type='CityscapesDGDataset',
                data_root=synthetic_root + 'cityscapes',
                data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
                pipeline=synthetic_test_pipeline),
            dict(
                type='BDD100KDGDataset',
                data_root=synthetic_root + 'bdd100k',
                data_prefix=dict(img_path='images/10k/val',
                                 seg_map_path='labels/sem_seg/masks/val'),
                pipeline=synthetic_test_pipeline),
            dict(
                type='MapillaryDataset',
                data_root=synthetic_root + 'mapillary',
                data_prefix=dict(img_path='validation/images',
                                 seg_map_path='cityscapes_trainIdLabel/val/label'),
                pipeline=synthetic_test_pipeline),
        ]))
# single images: the test pipeline with mmcv's loaders (see dg_common.py)
test_pipeline = [dict(t, type=t['type'].replace('LoadChecked', 'Load'))
                 for t in synthetic_test_pipeline]
val_dataloader['dataset']['pipeline'] = test_pipeline
test_dataloader = val_dataloader
val_evaluator = dict(protocol='synthetic demo domains at their generated size')
test_evaluator = val_evaluator
