# BDD100K (target). Layout: data/bdd100k/images/10k/{train,val}/*.jpg and
# data/bdd100k/labels/sem_seg/masks/{train,val}/*.png (already 19 train IDs; no converter).
#   tqdm / MFuser:  native 1280x720 (the release's test scale (1280, 720), keep ratio)
#                                                      -> val_bdd100k
#   Rein / SoMA:    resize to 1280x720                -> val_bdd100k_rein (the same)
bdd100k_type = 'BDD100KDGDataset'  # mmseg's 'BDD100KDataset' works the same
bdd100k_root = 'data/bdd100k/'
bdd100k_test_pipeline = [
    dict(type='LoadCheckedImageFromFile'),
    dict(type='Resize', scale=(1280, 720), keep_ratio=True),
    dict(type='LoadCheckedAnnotations'),
    dict(type='PackSegInputs'),
]
bdd100k_test_pipeline_rein = bdd100k_test_pipeline  # the same 1280x720
val_bdd100k = dict(
    type=bdd100k_type,
    data_root=bdd100k_root,
    data_prefix=dict(img_path='images/10k/val', seg_map_path='labels/sem_seg/masks/val'),
    img_suffix='.jpg',
    seg_map_suffix='.png',
    pipeline=bdd100k_test_pipeline)
val_bdd100k_rein = dict(val_bdd100k, pipeline=bdd100k_test_pipeline_rein)
