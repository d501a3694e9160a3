# The released CLIP variant's optimiser: as schedule_20k.py but AdamW weight decay 1e-4 and only
# the 'text_encoder' (lr 0) and 'norm' (no decay) name keys.
_base_ = ['./schedule_20k.py']
optim_wrapper = dict(
    optimizer=dict(weight_decay=1e-4),
    paramwise_cfg=dict(
        custom_keys=dict(_delete_=True, text_encoder=dict(lr_mult=0.0),
                         norm=dict(decay_mult=0.0))))
