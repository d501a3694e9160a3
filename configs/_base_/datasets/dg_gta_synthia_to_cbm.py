# G+S -> C/B/M: GTAV and SYNTHIA as ONE training set, evaluated on Cityscapes, BDD100K and
# Mapillary exactly as dg_gta_to_cbm.py (tqdm/MFuser protocol, 19 classes: GTAV has all 19).
# Each source keeps its own data set class, pipeline and label mapping (train_gta,
# train_synthia); MultiSourceRareClassDataset counts the rare-class statistics per source
# (own caches) and samples the union as the release samples one source (class by
# softmax((1 - f_c) / T) over the union's pixel shares, T=100, min_pixels 3000, then an image
# of any source holding the class, min_crop_ratio 0.5). The sources are logged when the set is
# built and named in dg_results.json ('train_data').
_base_ = ['./dg_gta_to_cbm.py', './synthia.py']
train_sources = ['gta', 'synthia']
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='MultiSourceRareClassDataset',
        datasets=[{{_base_.train_gta}}, {{_base_.train_synthia}}],
        sources=train_sources,
        min_pixels=3000,
        temperature=100,  # the release's class_temp
        min_crop_ratio=0.5))
val_evaluator = dict(
    train_data='GTAV + SYNTHIA (one training set, rare-class sampling over the union)')
test_evaluator = val_evaluator
