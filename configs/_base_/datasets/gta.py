# GTAV (source). Layout (data/README.md): data/gta/images/*.png, data/gta/labels/*.png;
# run `python tools/dataset_converters/gta.py data/gta` once for labels/*_labelTrainIds.png.
# Train pipeline of the G -> C/B/M recipe as released: random rescale by a ratio in [0.5, 2.0]
# of each image's OWN size (mmseg 0.x Resize(ratio_range=(0.5, 2.0)) without img_scale), random
# 512 crop with cat_max_ratio 0.75, flip 0.5, photometric distortion. Normalisation and padding
# to the crop (label pad 255) are done by the model's data preprocessor. Rare-class sampling
# wraps the source set (train_gta_rcs) with the release's settings: min_pixels 3000 (an image
# counts for a class with MORE than that), class temperature 100, min_crop_ratio 0.5.
gta_type = 'GTAVDataset'
gta_root = 'data/gta/'
gta_crop_size = (512, 512)
gta_train_pipeline = [
    dict(type='LoadCheckedImageFromFile'),
    dict(type='LoadCheckedAnnotations'),
    dict(type='RandomRatioResize', ratio_range=(0.5, 2.0)),
    dict(type='RandomCrop', crop_size=gta_crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_gta = dict(
    type=gta_type,
    data_root=gta_root,
    data_prefix=dict(img_path='images', seg_map_path='labels'),
    img_suffix='.png',
    seg_map_suffix='_labelTrainIds.png',
    pipeline=gta_train_pipeline)
train_gta_rcs = dict(
    type='RareClassSampledDataset',
    dataset=train_gta,
    min_pixels=3000,
    temperature=100,
    min_crop_ratio=0.5)
