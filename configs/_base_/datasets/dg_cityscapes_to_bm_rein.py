# C -> B/M (Cityscapes to BDD100K, Mapillary), Rein evaluation protocol: everything as
# dg_cityscapes_to_bm.py except the test resolutions of the targets (Rein/SoMA: BDD100K
# 1280x720, half-resolution Mapillary at 1024x512). BDD100K's test pipeline, the single-image
# one (test_pipeline), is the same under both protocols.
_base_ = ['./dg_cityscapes_to_bm.py']
val_dataloader = dict(
    dataset=dict(datasets=[{{_base_.val_bdd100k_rein}}, {{_base_.val_mapillary_rein}}]))
test_dataloader = val_dataloader
val_evaluator = dict(protocol='Rein/SoMA: BDD100K 1280x720, Mapillary half-res 1024x512')
test_evaluator = val_evaluator
