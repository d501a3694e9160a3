"""Where an MFuser model's weights come from and where they go: the whole lifecycle.

1. **Pretrained files.** The frozen parts are the DINOv2 tower, the CLIP-like tower and the
   text encoder. Each is read from the file its config key names (:data:`PRETRAINED_PARTS`:
   config key -> state-dict prefix), when the model is built. The readers sit beside the models,
   as timm's checkpoint filters do (:mod:`mfuser.models.pretrained`: key renaming, patch-kernel
   resampling, strict shape checks). Nothing is downloaded; a key set to None leaves that part
   random (the CPU demo, the tests: :func:`build_model_without_pretrained`).
2. **Frozen parts.** The segmentor freezes those parts; only the MVFuser adapters, the necks,
   MTEnhancer and the head train (~115 M of ~850 M parameters at full size).
3. **Trainable-only checkpoints.** :class:`TrainableCheckpointHook` leaves out of every saved
   checkpoint each part whose file the config names and of which nothing trains. It records
   in ``meta['frozen_weights_from']`` which file each left-out part comes from.
4. **Loading a checkpoint** (``tools/test.py``, ``tools/infer.py``, :mod:`mfuser.apis`):
   :func:`read_checkpoint` reads the file once. It loads weights-only with the allow-list of
   :mod:`mfuser.engine.checkpoint`, and an official release file (github devinxzhang/MFuser) is
   converted in memory by :mod:`mfuser.models.official_release`.
   - :func:`skip_pretrained_held_by` clears the config's file keys for the parts the checkpoint
     holds, so a released checkpoint needs no DINOv2 or CLIP files.
   - :func:`load_weights` puts the weights into the model once
     :func:`require_matching_checkpoint` has checked that the model fits the checkpoint
     exactly. The only parts it may lack are those left out in step 3 whose files the config
     names. mmengine would load them non-strictly, so a mismatch would silently evaluate a
     partly random model.
5. **Resume and load_from.** mmengine's Runner reads its own checkpoints through the loader that
   :func:`~mfuser.engine.checkpoint.install_safe_loader` registers; that loader is weights-only
   and converts official files too. ``--resume`` runs the same strict check first
   (:func:`mfuser.apis.train_runner`), so a resumed file is read twice (an official file
   cannot be resumed from: it holds no optimizer state or iteration).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmseg.registry import HOOKS

from .checkpoint import CheckpointError, convert_official_checkpoint, load_trusted_local

# config key naming a pretrained-weights file -> prefix of the weights it fills in the model
PRETRAINED_PARTS = {
    'model.backbone.vfm.checkpoint': 'backbone.vfm.',
    'model.backbone.vlm.checkpoint': 'backbone.vlm.',
    'model.text_encoder.checkpoint': 'text_encoder.',
}


def config_value(cfg, dotted: str):
    """``cfg['a']['b']['c']`` for ``'a.b.c'``, or None where a level is missing."""
    node = cfg
    for part in dotted.split('.'):
        node = node.get(part) if hasattr(node, 'get') else None
    return node


def clear_pretrained(cfg, keys=PRETRAINED_PARTS) -> list[str]:
    """Set the pretrained-file entries ``keys`` of ``cfg`` to None (the parts stay random or
    come from a checkpoint); the keys that named a file."""
    cleared = []
    for key in keys:
        parent, leaf = key.rsplit('.', 1)
        node = config_value(cfg, parent)
        if hasattr(node, 'get') and leaf in node:
            if node[leaf]:
                cleared.append(key)
            node[leaf] = None
    return cleared


@dataclasses.dataclass
class Checkpoint:
    """The model weights of a checkpoint file, read once (:func:`read_checkpoint`).

    Attributes:
        filename: the file.
        state_dict: name -> tensor, without a DDP ``module.`` prefix (memory-mapped where the
            file allows it).
        meta: the checkpoint's ``meta`` (``dataset_meta``, ``frozen_weights_from``, and for an
            official file ``official_variant``).
    """
    filename: str
    state_dict: dict[str, torch.Tensor]
    meta: dict


def read_checkpoint(filename: str) -> Checkpoint:
    """Read a runner checkpoint or bare state dict (an official MFuser file is converted).

    Raises:
        CheckpointError: not a checkpoint, refused by the allow-list, or without weights.
        FileNotFoundError: no such file.
    """
    ckpt = convert_official_checkpoint(
        load_trusted_local(filename, map_location='cpu', mmap=True), filename)
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise CheckpointError(f'{filename}: no model weights in it (expected a runner '
                              "checkpoint with 'state_dict' or a name -> tensor dict)")
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
    return Checkpoint(filename, state, meta)


def read_state_dict(filename: str) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint file (see :func:`read_checkpoint`)."""
    return read_checkpoint(filename).state_dict


def _as_checkpoint(checkpoint: str | Checkpoint) -> Checkpoint:
    return checkpoint if isinstance(checkpoint, Checkpoint) else read_checkpoint(checkpoint)


def _segmentor(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP and TTA wrappers."""
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def skip_pretrained_held_by(cfg, checkpoint: str | Checkpoint) -> list[str]:
    """Set to None the config's pretrained-weight files whose weights ``checkpoint`` holds.

    A checkpoint that holds the frozen towers (a released MFuser checkpoint, a ``keep_frozen``
    run, the CPU demo with random towers) needs neither the DINOv2 nor the CLIP files (loading
    them first would only be overwritten). Files whose part the checkpoint lacks (the default
    trainable-only checkpoints) stay in the config and must exist.

    Returns:
        The config keys that were cleared.
    """
    keys = list(_as_checkpoint(checkpoint).state_dict)
    held = [key for key, prefix in PRETRAINED_PARTS.items()
            if any(k.startswith(prefix) for k in keys)]
    return clear_pretrained(cfg, held)


def checkpoint_mismatch(model: torch.nn.Module, checkpoint: str | Checkpoint,
                        cfg=None) -> str | None:
    """Why the weights in ``checkpoint`` do not fit ``model``, or None if they do.

    With the run's ``cfg``, a frozen pretrained part that the checkpoint leaves out (saved by
    :class:`TrainableCheckpointHook`) is fine when the config names its pretrained file (the
    model loaded it when it was built); without that file it is an error naming both the
    checkpoint and the config key.
    """
    ckpt = _as_checkpoint(checkpoint)
    state = ckpt.state_dict
    frozen_from = ckpt.meta.get('frozen_weights_from') or {}
    own = _segmentor(model).state_dict()
    missing = [k for k in own if k not in state]
    problems = []
    for cfg_key, prefix in PRETRAINED_PARTS.items():
        part = [k for k in own if k.startswith(prefix)]
        if cfg is None or not part or any(k in state for k in part):
            continue  # the checkpoint holds this part (or the model has none)
        missing = [k for k in missing if not k.startswith(prefix)]
        if not config_value(cfg, cfg_key):  # nothing to take the frozen weights from
            trained_with = (frozen_from.get(prefix) or {}).get('file')
            hint = f' (it was trained with {trained_with!r})' if trained_with else ''
            problems.append(
                f'it was saved without the frozen {prefix[:-1]} weights, which come from '
                f'the pretrained file named by {cfg_key}, but the config sets none: set '
                f'{cfg_key} to that file{hint}')
    unexpected = [k for k in state if k not in own]
    reshaped = [f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)} in the model'
                for k in own if k in state and state[k].shape != own[k].shape]

    def some(names):
        return ', '.join(names[:5]) + (f', ... ({len(names)} in all)' if len(names) > 5 else '')

    if missing:
        problems.append(f'{len(missing)} weights of the model are not in it: {some(missing)}')
    if unexpected:
        problems.append(f'{len(unexpected)} of its weights are not in the model: '
                        f'{some(unexpected)}')
    if reshaped:
        problems.append(f'{len(reshaped)} have another shape: {some(reshaped)}')
    return '; '.join(problems) or None


def require_matching_checkpoint(model: torch.nn.Module, checkpoint: str | Checkpoint,
                                cfg=None) -> None:
    """Raise :class:`CheckpointError` unless ``checkpoint`` holds ``model``'s weights (all of
    them, or - with ``cfg`` - all but frozen parts whose pretrained files the config names)."""
    ckpt = _as_checkpoint(checkpoint)
    problem = checkpoint_mismatch(model, ckpt, cfg)
    if problem:
        raise CheckpointError(
            f'{ckpt.filename} does not fit the model the config builds: {problem}. Use the '
            'config the checkpoint was trained with (its copy is in the run directory of that '
            'work dir), or fix the --cfg-options that change the model.')


def load_weights(model: torch.nn.Module, checkpoint: Checkpoint, cfg=None) -> None:
    """Copy the checkpoint's weights into ``model`` (inside DDP / TTA wrappers) once
    :func:`require_matching_checkpoint` accepts them (with ``cfg``); the parts it may lack
    keep the weights the model was built with (from the config's pretrained files)."""
    require_matching_checkpoint(model, checkpoint, cfg)
    result = _segmentor(model).load_state_dict(checkpoint.state_dict, strict=False)
    kept = [prefix[:-1] for prefix in PRETRAINED_PARTS.values()
            if any(k.startswith(prefix) for k in result.missing_keys)]
    print_log(f'loaded {len(checkpoint.state_dict)} tensors from {checkpoint.filename}' +
              (f'; from the pretrained files: {", ".join(kept)}' if kept else ''),
              logger='current')


@HOOKS.register_module()
class TrainableCheckpointHook(Hook):
    """Leave the frozen pretrained parts out of every saved checkpoint (step 3 above).

    A part is left out only when the config names its pretrained file AND none of its
    parameters trains; a part with random weights (no file, e.g. the CPU demo) is always kept,
    since nothing could rebuild it. At full size a checkpoint then holds ~0.46 GB instead of
    3.4 GB of copies of the tower files.

    Args:
        keep_frozen: save the whole model anyway (a self-contained file).
    """

    priority = 'LOW'

    def __init__(self, keep_frozen: bool = False):
        self.keep_frozen = bool(keep_frozen)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.keep_frozen:
            return
        trains = {n for n, p in _segmentor(runner.model).named_parameters() if p.requires_grad}
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


def placeholder_tokenizer(texts, context_length):
    """Token ids of the right shape (ones): enough where only shapes matter."""
    return torch.ones(len(texts), context_length, dtype=torch.long)


def build_model_without_pretrained(config, device: str | None = None,
                                   cfg_options: dict | None = None,
                                   placeholder_tokens: bool = False) -> torch.nn.Module:
    """The model of ``config`` (a path or a Config, left unchanged) with every pretrained-file
    key of :data:`PRETRAINED_PARTS` cleared, so the towers and text encoder are random and no
    weight file is needed (the converter's shape check, the analysis scripts, the tests).

    Args:
        device: build under this device context (``'meta'``: shapes only, no memory).
        cfg_options: merged into the config afterwards.
        placeholder_tokens: replace a local tokenizer (SigLIP's) by :func:`placeholder_tokenizer`
            (token ids do not change any shape).
    """
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(config) if isinstance(config, str) else copy.deepcopy(config)
    clear_pretrained(cfg)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if placeholder_tokens and cfg.model.text_encoder.get('tokenizer') and \
            cfg.model.text_encoder.get('token_ids') is None:
        cfg.model.text_encoder.tokenizer = placeholder_tokenizer
    with torch.device(device) if device else contextlib.nullcontext():
        return MODELS.build(cfg.model)
