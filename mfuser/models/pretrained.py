"""Loading official pretrained weights from local files (nothing is ever downloaded).

Layouts accepted for the image towers (converted with timm's own checkpoint filters):

* DINOv2 repository ``.pth`` (``dinov2_vit{s,b,l}14_pretrain.pth``): timm
  ``vision_transformer.checkpoint_filter_fn`` (drops ``mask_token``).
* BAAI EVA-CLIP ``EVA02_CLIP_L_336_psz14_s6B.pt`` (``visual.*``): timm ``eva.checkpoint_filter_fn``
  (renames q/v biases, ``inner_attn_ln``, ``ffn_ln``, ``w1/w2/w3``; drops the rope buffers,
  which timm recomputes).
* OpenAI CLIP ``ViT-L-14-336px.pt`` (a TorchScript archive, whose tensors are read without
  running its code; plain state dicts work too):
  timm ``vision_transformer.checkpoint_filter_fn`` (OpenAI branch: ``visual.proj`` becomes the
  linear ``head``).
* open_clip (``visual.trunk.*``) or timm state dicts, ``.pt``/``.pth``/``.bin`` or
  ``.safetensors`` (SigLIP ViT-L/16-384 and any timm tower).

Position embeddings and (when the VFM follows a VLM with another patch size) the patch
embedding kernel are resized to the tower's grid and patch size as :data:`RESAMPLE_MODES`
says: by default (``'release'``) with a plain ``F.interpolate`` (the tower's
``interpolation``, bicubic unless set; no antialiasing), as the official code does;
``'timm'`` leaves both to timm's filters (antialiased position embeddings, pseudo-inverse
patch-kernel resize).

Text towers (``load_text_tower``): ``text.*`` of BAAI EVA-CLIP / open_clip custom-text
checkpoints, or the top-level ``token_embedding``/``transformer``/``ln_final``/
``text_projection`` keys of OpenAI/open_clip CLIP checkpoints.

Loading is strict: missing keys, unexpected keys and shape mismatches raise
:class:`CheckpointMismatchError` listing them; a missing file raises ``FileNotFoundError``
naming the config key and the file expected there.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log

from .torchscript_weights import TorchScriptReadError, is_torchscript, read_torchscript_weights

__all__ = [
    'CheckpointMismatchError', 'require_file', 'load_state_dict_file', 'load_vision_tower',
    'load_text_tower', 'convert_vision_state_dict', 'resize_patch_kernel', 'check_and_load',
]

#: What a config key is expected to point at, for error messages.
EXPECTED_FILES = {
    'dinov2': 'the DINOv2 repository weights, e.g. dinov2_vitl14_pretrain.pth',
    'eva02': 'the BAAI EVA-CLIP weights, e.g. EVA02_CLIP_L_336_psz14_s6B.pt',
    'clip': "OpenAI's TorchScript archive, e.g. ViT-L-14-336px.pt",
    'siglip': 'an open_clip/timm SigLIP state dict, e.g. open_clip_pytorch_model.bin or '
              'model.safetensors of ViT-L-16-SigLIP-384',
}


class CheckpointMismatchError(RuntimeError):
    """A checkpoint does not fit the model it is loaded into."""


def _expected_for(name: str) -> str:
    name = name.lower()
    for key in ('dinov2', 'eva02', 'siglip', 'clip'):
        if key in name:
            return EXPECTED_FILES[key]
    return 'a state dict for this model'


def _unwrap(state: Mapping) -> dict:
    """Unwrap the usual containers (``state_dict``, ``model``, ``module``, ``model_ema``)."""
    for key in ('state_dict', 'model', 'module', 'model_ema'):
        inner = state.get(key) if isinstance(state, Mapping) else None
        if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
            if any(isinstance(v, torch.Tensor) for v in inner.values()):
                state = inner
    return dict(state)


def require_file(path: str | os.PathLike, config_key: str, model_name: str = '') -> None:
    """Raise ``FileNotFoundError`` naming ``config_key`` and the expected file if absent."""
    if path is None or not os.path.isfile(str(path)):
        expected = _expected_for(model_name) if model_name else 'a checkpoint'
        raise FileNotFoundError(
            f"{config_key}={str(path)!r}: file not found. Put {expected} there (weights are "
            f'never downloaded), or set {config_key}=None to start from random weights.')


def _trusted() -> bool:
    """The user's explicit say-so to run a weights file's code (the same switch as for runner
    checkpoints, :mod:`mfuser.engine.checkpoint`)."""
    return os.environ.get('MFUSER_TRUST_CHECKPOINTS') == '1'


def load_state_dict_file(path: str | os.PathLike, config_key: str,
                         expected: str = 'a checkpoint') -> dict[str, torch.Tensor]:
    """Read a local checkpoint into a flat ``name -> tensor`` dict on the CPU.

    ``.safetensors`` files with safetensors; TorchScript archives (OpenAI's CLIP ``.pt``
    files) with :func:`~mfuser.models.torchscript_weights.read_torchscript_weights`, which
    reads their tensors without running any of the archive's code; anything else with
    ``torch.load(weights_only=True)`` (plain state dicts). Nothing from the file is executed
    unless ``MFUSER_TRUST_CHECKPOINTS=1`` (then a pickle that needs other objects is loaded
    with ``weights_only=False``, and an archive the reader cannot read with
    ``torch.jit.load``).

    Raises:
        FileNotFoundError: naming ``config_key`` and the expected file when ``path`` is absent.
        CheckpointMismatchError: the file is refused (it holds Python objects besides
            tensors), damaged, or not a checkpoint; the message names ``config_key``.
    """
    if path is None or not os.path.isfile(str(path)):
        raise FileNotFoundError(
            f"{config_key}={str(path)!r}: file not found. Put {expected} there (weights are "
            f'never downloaded), or set {config_key}=None to start from random weights.')
    path = str(path)
    where = f'{config_key}={path!r}'
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        return load_file(path, device='cpu')
    if is_torchscript(path):  # e.g. OpenAI's ViT-L-14-336px.pt
        try:
            return read_torchscript_weights(path)
        except TorchScriptReadError as exc:
            if _trusted():
                return dict(torch.jit.load(path, map_location='cpu').state_dict())
            raise CheckpointMismatchError(
                f'{where}: cannot read the weights of this TorchScript archive without running '
                f'its code: {exc}. Expected {expected}; if you trust this file, set '
                'MFUSER_TRUST_CHECKPOINTS=1 to load it with torch.jit.load.') from None
    from mfuser.engine.checkpoint import UnsafeCheckpointError, load_trusted_local
    try:
        state = load_trusted_local(path, map_location='cpu')
    except UnsafeCheckpointError as exc:
        named = re.search(r'\(([^()]*)\)\. If you trust', str(exc))
        raise CheckpointMismatchError(
            f'{where}: refused: the file holds Python objects besides tensors'
            f'{f" ({named[1]})" if named else ""}, and unpickling them could run code. '
            f'Expected {expected}; if you trust this file, set MFUSER_TRUST_CHECKPOINTS=1.'
        ) from None
    except ValueError as exc:  # CheckpointError: damaged or not a checkpoint
        raise CheckpointMismatchError(f'{where}: {str(exc).replace(f"{path}: ", "", 1)}. '
                                      f'Expected {expected}.') from None
    if isinstance(state, Mapping):
        return {k: v for k, v in _unwrap(state).items() if isinstance(v, torch.Tensor)}
    if isinstance(state, nn.Module):  # only with MFUSER_TRUST_CHECKPOINTS=1
        return dict(state.state_dict())
    raise CheckpointMismatchError(f'{where}: holds a {type(state).__name__}, not a state dict '
                                  f'of tensors. Expected {expected}.')


def _short(keys: Iterable[str], limit: int = 12) -> str:
    keys = sorted(keys)
    text = ', '.join(keys[:limit])
    return text + (f', ... ({len(keys)} in all)' if len(keys) > limit else '')


def check_and_load(module: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                   ignore: Iterable[str] = ()) -> None:
    """Load ``state`` into ``module`` strictly, with a readable error listing every problem.

    Args:
        module: the target module.
        state: converted ``name -> tensor`` dict in the module's key names.
        source: what is being loaded (file and config key), for messages.
        ignore: regular expressions of checkpoint keys to drop silently-but-logged (e.g. a
            classifier head the target has no use for).
    """
    target = module.state_dict()
    patterns = [re.compile(p) for p in ignore]
    ignored = sorted(k for k in state if k not in target and any(p.match(k) for p in patterns))
    state = {k: v for k, v in state.items() if k not in ignored}
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    mismatched = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(target[k].shape)}'
                  for k in sorted(set(state) & set(target)) if state[k].shape != target[k].shape]
    if missing or unexpected or mismatched:
        lines = [f'Checkpoint {source} does not fit {type(module).__name__}:']
        if missing:
            lines.append(f'  missing keys ({len(missing)}): {_short(missing)}')
        if unexpected:
            lines.append(f'  unexpected keys ({len(unexpected)}): {_short(unexpected)}')
        if mismatched:
            lines.append(f'  shape mismatches ({len(mismatched)}): ' + '; '.join(mismatched[:8]))
        lines.append('  Check that the config names the model this file was saved from.')
        raise CheckpointMismatchError('\n'.join(lines))
    module.load_state_dict(state, strict=True)
    note = f' (ignored {len(ignored)} unused keys: {_short(ignored, 4)})' if ignored else ''
    print_log(f'Loaded {len(state)} tensors from {source} into {type(module).__name__}{note}',
              logger='current', level=logging.INFO)


#: How pretrained position embeddings and patch kernels are resampled to a tower's grid.
#: ``'release'`` (default): plain ``F.interpolate`` with the tower's ``interpolation`` (bicubic
#: unless set; ``align_corners=False``, no antialiasing) for both, as the official MFuser code
#: resizes EVA's 24x24 and DINOv2's 37x37 position embeddings and DINOv2's 14x14 patch kernel.
#: ``'timm'``: timm's filters as they are (antialiased position embeddings, pseudo-inverse
#: patch-kernel resize).
RESAMPLE_MODES = ('release', 'timm')


def resize_patch_kernel(weight: torch.Tensor, size: tuple[int, int],
                        interpolation: str = 'bicubic') -> torch.Tensor:
    """(O, I, h, w) patch-embedding kernel -> (O, I, *size) by ``F.interpolate``
    (``align_corners=False``), as the release resizes DINOv2's (bicubic) and OpenAI CLIP's
    (bilinear) 14x14 kernels to 16x16."""
    if tuple(weight.shape[-2:]) == tuple(size):
        return weight
    return F.interpolate(weight.float(), size=tuple(size), mode=interpolation,
                         align_corners=False).to(weight.dtype)


def _is_patch_kernel(key: str) -> bool:
    return key.endswith('patch_embed.proj.weight') or key.endswith('conv1.weight')


def convert_vision_state_dict(state: Mapping[str, torch.Tensor], model: nn.Module,
                              resample: str = 'release', interpolation: str = 'bicubic'
                              ) -> dict[str, torch.Tensor]:
    """Convert an official layout to timm keys with timm's own filter for ``model``'s class.

    Position embeddings and patch-embedding kernels are resampled to the model's grid and
    patch size as ``resample`` says (:data:`RESAMPLE_MODES`).
    """
    from timm.models import eva, vision_transformer
    if resample not in RESAMPLE_MODES:
        raise ValueError(f'resample must be one of {RESAMPLE_MODES}, got {resample!r}')
    state = _unwrap(state)
    if resample == 'release':
        size = tuple(model.patch_embed.proj.weight.shape[-2:])
        state = {k: resize_patch_kernel(v, size, interpolation)
                 if _is_patch_kernel(k) and v.dim() == 4 else v for k, v in state.items()}
    kwargs = dict(antialias=resample == 'timm', interpolation=interpolation)
    if isinstance(model, eva.Eva):
        return eva.checkpoint_filter_fn(state, model, **kwargs)
    if isinstance(model, vision_transformer.VisionTransformer):
        return vision_transformer.checkpoint_filter_fn(state, model, **kwargs)
    raise TypeError(f'No converter for {type(model).__name__}.')


def load_vision_tower(model: nn.Module, path: str, config_key: str, role: str = 'vlm',
                      resample: str = 'release', interpolation: str = 'bicubic',
                      double_class_embedding: bool = False) -> None:
    """Load an official image-tower checkpoint into a timm tower (strict).

    Args:
        model: the timm ``VisionTransformer`` / ``Eva`` tower.
        path: local file (see the module docstring for the accepted layouts).
        config_key: the config key that named ``path`` (e.g. ``'vfm.checkpoint'``).
        role: ``'vfm'`` drops projection-head keys the VFM has no use for.
        resample: how position embeddings / patch kernels are resized (:data:`RESAMPLE_MODES`).
        interpolation: ``F.interpolate`` mode of those resizes (``'bicubic'``/``'bilinear'``).
        double_class_embedding: store twice the file's class embedding as the class token
            (the released CLIP tower adds OpenAI's ``class_embedding`` twice to token 0).
    """
    name = getattr(model, 'pretrained_cfg', {}).get('architecture', type(model).__name__)
    raw = load_state_dict_file(path, config_key, expected=_expected_for(str(name)))
    try:
        state = convert_vision_state_dict(raw, model, resample=resample,
                                          interpolation=interpolation)
    except Exception as exc:  # noqa: BLE001 - a converter failing means a wrong layout
        raise CheckpointMismatchError(
            f'{config_key}={path!r}: could not convert it for {name} ({type(exc).__name__}: '
            f'{exc}). Expected {_expected_for(str(name))}.') from exc
    if not state:
        raise CheckpointMismatchError(f'{config_key}={path!r}: no image-tower weights found '
                                      f'for {name}. Expected {_expected_for(str(name))}.')
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    if double_class_embedding and 'cls_token' in state:
        state['cls_token'] = 2 * state['cls_token']
    ignore = []
    if role == 'vfm' or isinstance(model.head, nn.Identity):
        ignore += [r'head\.', r'fc_norm\.']
    elif isinstance(model.head, nn.Linear) and model.head.bias is None:
        ignore += [r'head\.bias$']  # timm adds a zero bias to OpenAI's bias-free projection
    if getattr(model, 'attn_pool', None) is None:
        ignore += [r'attn_pool\.']
    check_and_load(model, state, f'{config_key}={path!r}', ignore=ignore)


def text_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text tower of a CLIP-family checkpoint in open_clip ``TextTransformer`` key names."""
    state = _unwrap(state)
    if any(k.startswith('text.') for k in state):  # BAAI EVA-CLIP, open_clip custom-text
        return {k[len('text.'):]: v for k, v in state.items() if k.startswith('text.')}
    if 'token_embedding.weight' in state:  # OpenAI CLIP / open_clip CLIP: top-level keys
        skip = ('visual.', 'logit_scale', 'logit_bias', 'input_resolution', 'context_length',
                'vocab_size')
        return {k: v for k, v in state.items() if not k.startswith(skip)}
    return {}


def load_text_tower(module: nn.Module, path: str, config_key: str,
                    expected: str = 'a CLIP-family checkpoint with a text tower'
                    ) -> dict[str, float]:
    """Load the text tower of a CLIP-family checkpoint into ``module`` (strict).

    Returns the file's scalar ``logit_scale`` / ``logit_bias`` (those present), which SigLIP's
    score-map loss uses.
    """
    raw = load_state_dict_file(path, config_key, expected=expected)
    scalars = {k: float(raw[k].reshape(-1)[0]) for k in ('logit_scale', 'logit_bias')
               if isinstance(raw.get(k), torch.Tensor) and raw[k].numel() == 1}
    state = text_state_dict(raw)
    if not state:
        raise CheckpointMismatchError(
            f'{config_key}={path!r}: no text tower found (neither text.* nor token_embedding '
            f'keys). Expected {expected}.')
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    own = module.state_dict().get('positional_embedding')
    pos = state.get('positional_embedding')
    if own is not None and pos is not None and pos.dim() == 2 and pos.shape[0] > own.shape[0]:
        # the release keeps the first n_ctx + name-length rows of the pretrained 77
        state['positional_embedding'] = pos[:own.shape[0]]
    check_and_load(module, state, f'{config_key}={path!r}')
    return scalars
