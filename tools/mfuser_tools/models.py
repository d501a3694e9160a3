"""Building a config's model without its pretrained weight files (random towers), for the
converter's shape check, the analysis scripts and the tests."""
from __future__ import annotations

import contextlib
import copy

import torch


def placeholder_tokenizer(texts, context_length):
    """Token ids of the right shape (ones): enough where only shapes matter."""
    return torch.ones(len(texts), context_length, dtype=torch.long)


def build_model_without_pretrained(config, device: str | None = None,
                                   cfg_options: dict | None = None,
                                   placeholder_tokens: bool = False) -> torch.nn.Module:
    """The model of ``config`` (a path or a Config, left unchanged) with every pretrained-file
    key of :data:`mfuser.engine.checkpoint.PRETRAINED_PARTS` cleared, so the towers and text
    encoder are random and no weight file is needed.

    Args:
        device: build under this device context (``'meta'``: shapes only, no memory).
        cfg_options: merged into the config afterwards.
        placeholder_tokens: replace a local tokenizer (SigLIP's) by :func:`placeholder_tokenizer`
            (token ids do not change any shape).
    """
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import mfuser  # noqa: F401  registers the modules
    from mfuser.engine.checkpoint import PRETRAINED_PARTS, config_value
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(config) if isinstance(config, str) else copy.deepcopy(config)
    for key in PRETRAINED_PARTS:
        parent, leaf = key.rsplit('.', 1)
        node = config_value(cfg, parent)
        if hasattr(node, 'get') and leaf in node:
            node[leaf] = None
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if placeholder_tokens and cfg.model.text_encoder.get('tokenizer') and \
            cfg.model.text_encoder.get('token_ids') is None:
        cfg.model.text_encoder.tokenizer = placeholder_tokenizer
    with torch.device(device) if device else contextlib.nullcontext():
        return MODELS.build(cfg.model)
