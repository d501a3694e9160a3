# SYNTHIA RAND-CITYSCAPES (source). Layout: data/synthia/RGB/*.png, data/synthia/GT/LABELS/*.png
# (16-bit); run `python tools/dataset_converters/synthia.py data/synthia` once. Labels use the 19
# Cityscapes train IDs (terrain/truck/train never occur); evaluate on SYNTHIA_CLASSES_16.
synthia_type = 'SYNTHIADataset'
synthia_root = 'data/synthia/'
synthia_crop_size = (512, 512)
synthia_train_pipeline = [
    dict(type='LoadCheckedImageFromFile'),
    dict(type='LoadCheckedAnnotations'),
    dict(type='RandomRatioResize', ratio_range=(0.5, 2.0)),  # of the image's own size
    dict(type='RandomCrop', crop_size=synthia_crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_synthia = dict(
    type=synthia_type,
    data_root=synthia_root,
    data_prefix=dict(img_path='RGB', seg_map_path='GT/LABELS'),
    img_suffix='.png',
    seg_map_suffix='_labelTrainIds.png',
    pipeline=synthia_train_pipeline)
train_synthia_rcs = dict(
    type='RareClassSampledDataset',
    dataset=train_synthia,
    min_pixels=3000,
    temperature=100,  # the release's class_temp
    min_crop_ratio=0.5)
synthia_eval_classes = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole',
                        'traffic light', 'traffic sign', 'vegetation', 'sky', 'person', 'rider',
                        'car', 'bus', 'motorcycle', 'bicycle')
