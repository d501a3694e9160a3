# Cityscapes (target, or source for C -> B/M). Layout: data/cityscapes/leftImg8bit/{train,val}/
# <city>/*_leftImg8bit.png and gtFine/{train,val}/<city>/*_gtFine_labelIds.png; run
# `python tools/dataset_converters/cityscapes.py data/cityscapes` once (*_labelTrainIds.png).
# Two test protocols (spec section 6):
#   tqdm / MFuser:  resize to 2048x1024 (keep ratio)  -> val_cityscapes
#   Rein / SoMA:    resize to 1024x512 (keep ratio)   -> val_cityscapes_rein
# Slide inference (512 crop, stride 341) is set in the model's test_cfg.
cityscapes_type = 'CityscapesDGDataset'  # mmseg's 'CityscapesDataset' works the same
cityscapes_root = 'data/cityscapes/'
cityscapes_crop_size = (512, 512)
cityscapes_train_pipeline = [
    dict(type='LoadCheckedImageFromFile'),
    dict(type='LoadCheckedAnnotations'),
    dict(type='RandomRatioResize', ratio_range=(0.5, 2.0)),  # of the image's own size
    dict(type='RandomCrop', crop_size=cityscapes_crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
cityscapes_test_pipeline = [
    dict(type='LoadCheckedImageFromFile'),
    dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
    dict(type='LoadCheckedAnnotations'),
    dict(type='PackSegInputs'),
]
cityscapes_test_pipeline_rein = [
    dict(type='LoadCheckedImageFromFile'),
    dict(type='Resize', scale=(1024, 512), keep_ratio=True),
    dict(type='LoadCheckedAnnotations'),
    dict(type='PackSegInputs'),
]
train_cityscapes = dict(
    type=cityscapes_type,
    data_root=cityscapes_root,
    data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
    pipeline=cityscapes_train_pipeline)
train_cityscapes_rcs = dict(
    type='RareClassSampledDataset',
    dataset=train_cityscapes,
    min_pixels=3000,
    temperature=100,  # the release's class_temp
    min_crop_ratio=0.5)
val_cityscapes = dict(
    type=cityscapes_type,
    data_root=cityscapes_root,
    data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
    pipeline=cityscapes_test_pipeline)
val_cityscapes_rein = dict(val_cityscapes, pipeline=cityscapes_test_pipeline_rein)
