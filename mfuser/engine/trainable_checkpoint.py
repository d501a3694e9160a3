"""Checkpoints that hold what trains, not copies of the pretrained towers."""
from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from .checkpoint import PRETRAINED_PARTS, config_value

__all__ = ['TrainableCheckpointHook']


@HOOKS.register_module()
class TrainableCheckpointHook(Hook):
    """Leave the frozen pretrained parts out of every saved checkpoint.

    MFuser trains ~115 M of its ~850 M parameters; the frozen DINOv2 / CLIP towers and the text
    encoder are loaded from the files the config names (``model.backbone.vfm.checkpoint``,
    ``model.backbone.vlm.checkpoint``, ``model.text_encoder.checkpoint``) whenever the model is
    built, so storing them again in every ``iter_*.pth`` only copies those files (3.4 GB per
    checkpoint at full size instead of ~0.46 GB). A part is left out only when the config names
    its pretrained file AND none of its parameters trains; a part with random weights (no file,
    e.g. the CPU demo) is always kept, since nothing could rebuild it. What was left out, and
    from which file it comes, is recorded in ``meta['frozen_weights_from']``; loading such a
    checkpoint for testing, inference or ``--resume`` takes those parts from the config's files
    (:func:`~mfuser.engine.checkpoint.require_matching_checkpoint` checks they are named).

    Args:
        keep_frozen: save the whole model anyway (a self-contained file).
    """

    priority = 'LOW'

    def __init__(self, keep_frozen: bool = False):
        self.keep_frozen = bool(keep_frozen)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.keep_frozen:
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        trains = {n for n, p in model.named_parameters() if p.requires_grad}
        state = checkpoint['state_dict']
        omitted = {}
        for cfg_key, prefix in PRETRAINED_PARTS.items():
            path = config_value(runner.cfg, cfg_key)
            keys = [k for k in state if k.startswith(prefix)]
            if not path or not keys or any(k in trains for k in keys):
                continue
            for k in keys:
                del state[k]
            omitted[prefix] = dict(config_key=cfg_key, file=str(path), tensors=len(keys))
        if omitted:
            checkpoint.setdefault('meta', {})['frozen_weights_from'] = omitted
