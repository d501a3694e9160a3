# Mapillary Vistas v1.2 (target), 66 classes mapped to the 19 Cityscapes classes by
# `python tools/dataset_converters/mapillary.py data/mapillary [--half-res]` (table in
# mfuser/datasets/label_maps.py). Layout: data/mapillary/{training,validation}/images/*.jpg,
# .../v1.2/labels/*.png. Converted labels: cityscapes_trainIdLabel/{train,val}/label/*.png;
# half-resolution copies (--half-res): half/{train,val}_img/*.jpg, half/{train,val}_label/*.png.
#   tqdm / MFuser:  full-resolution validation, resize to 2048x1024 (keep ratio) -> val_mapillary
#   Rein / SoMA:    half-resolution copies, resize to 1024x512 (keep ratio)
#                   -> val_mapillary_rein
mapillary_type = 'MapillaryDataset'
mapillary_root = 'data/mapillary/'
mapillary_test_pipeline = [
    dict(type='LoadCheckedImageFromFile'),
    dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
    dict(type='LoadCheckedAnnotations'),
    dict(type='PackSegInputs'),
]
mapillary_test_pipeline_rein = [
    dict(type='LoadCheckedImageFromFile'),
    dict(type='Resize', scale=(1024, 512), keep_ratio=True),
    dict(type='LoadCheckedAnnotations'),
    dict(type='PackSegInputs'),
]
val_mapillary = dict(
    type=mapillary_type,
    data_root=mapillary_root,
    data_prefix=dict(img_path='validation/images',
                     seg_map_path='cityscapes_trainIdLabel/val/label'),
    img_suffix='.jpg',
    seg_map_suffix='.png',
    pipeline=mapillary_test_pipeline)
val_mapillary_rein = dict(
    val_mapillary,
    data_prefix=dict(img_path='half/val_img', seg_map_path='half/val_label'),
    pipeline=mapillary_test_pipeline_rein)
