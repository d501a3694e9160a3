# G -> C/B/M (GTAV to Cityscapes, BDD100K, Mapillary), Rein evaluation protocol: everything as
# dg_gta_to_cbm.py except the test resolutions of the targets (Rein/SoMA: Cityscapes 1024x512,
# BDD100K 1280x720, half-resolution Mapillary at 1024x512).
_base_ = ['./dg_gta_to_cbm.py']
val_dataloader = dict(
    dataset=dict(datasets=[
        {{_base_.val_cityscapes_rein}}, {{_base_.val_bdd100k_rein}},
        {{_base_.val_mapillary_rein}}
    ]))
# single images: the first target's test pipeline with mmcv's loaders (see dg_common.py)
test_pipeline = [dict(t, type=t['type'].replace('LoadChecked', 'Load'))
                 for t in _base_.cityscapes_test_pipeline_rein]
val_dataloader['dataset']['pipeline'] = test_pipeline
test_dataloader = val_dataloader
val_evaluator = dict(
    protocol='Rein/SoMA: Cityscapes 1024x512, BDD100K 1280x720, Mapillary half-res 1024x512')
test_evaluator = val_evaluator
