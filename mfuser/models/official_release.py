"""Key mapping from the official MFuser release (github devinxzhang/MFuser) to this project.

The six released checkpoints (EVA02-CLIP, CLIP and SigLIP variants, each trained on GTAV and
on Cityscapes) are mmcv-1.x files (``meta`` + ``state_dict``, possibly ``optimizer``) of the
official ``MFuser_EVA_CLIP`` / ``MFuser_CLIP`` / ``MFuser_SIGLIP`` segmentors. This module
turns such a state dict into the key names of :class:`~mfuser.models.segmentors.MFuser` built
from ``configs/mfuser_{eva02,clip,siglip}_*.py`` - the same tensors, renamed (and for a few
fused/split projections reshaped) - like timm's ``checkpoint_filter_fn`` does for timm models.

What is dropped, and why, is returned with the converted weights (:data:`DROPPED`).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

__all__ = ['VARIANTS', 'DROPPED', 'DROPPED_SIGLIP', 'detect_variant', 'convert_official_state_dict',
           'is_official_state_dict']

#: variant -> the project config that builds it
VARIANTS = {
    'eva02': 'configs/mfuser_eva02_gta.py',
    'clip': 'configs/mfuser_clip_gta.py',
    'siglip': 'configs/mfuser_siglip_gta.py',
}

#: official keys (regular expressions) that have no counterpart here, and why
DROPPED = (
    (r'^random_text$', 'a parameter of the official segmentor that its forward never uses'),
    (r'^text_encoder\.attn_mask$', 'the causal text mask, a non-persistent buffer (mmcv 1.x '
     'saved it anyway); rebuilt from the context length'),
    (r'^(text_encoder|backbone)\.embeddings\.position_ids$',
     "Hugging Face's non-persistent position-id buffer (arange)"),
    (r'^backbone\.(blocks\.\d+\.attn\.)?rope\.freqs_(cos|sin)$',
     "EVA02's rotary tables, deterministic; timm recomputes them (bit-identical)"),
    (r'^backbone\.dinov2\.mask_token$', "DINOv2's masked-image-modelling token (pretraining "
     'only, unused by the forward)'),
)
#: dropped for one variant only
DROPPED_SIGLIP = (
    (r'^backbone\.adapter_proj[123]\.', 'built (and trainable) in the released SigLIP model but '
     'never used by its forward'),
)
_DROPPED = [(re.compile(p), why) for p, why in DROPPED]
_DROPPED_SIGLIP = [(re.compile(p), why) for p, why in DROPPED_SIGLIP]


def detect_variant(keys) -> str:
    """'eva02', 'clip' or 'siglip' from the official state-dict keys (raises otherwise)."""
    keys = set(keys)
    if 'backbone.rope.freqs_cos' in keys or 'backbone.blocks.0.attn.q_proj.weight' in keys:
        return 'eva02'
    if 'backbone.class_embedding' in keys and 'backbone.conv1.weight' in keys:
        return 'clip'
    if 'backbone.embeddings.patch_embedding.weight' in keys:
        return 'siglip'
    raise ValueError('not an official MFuser state dict: none of the EVA02 '
                     "('backbone.rope.freqs_cos'), CLIP ('backbone.class_embedding') or SigLIP "
                     "('backbone.embeddings.patch_embedding.weight') keys is in it")


def is_official_state_dict(keys) -> bool:
    """Whether ``keys`` look like an official MFuser checkpoint (not this project's)."""
    keys = set(keys)
    if any(k.startswith(('backbone.vfm.', 'backbone.vlm.')) for k in keys):
        return False
    try:
        detect_variant(keys)
    except ValueError:
        return False
    return 'contexts' in keys


def _sub(rules: list[tuple[str, str]]) -> Callable[[str], str]:
    compiled = [(re.compile(p), r) for p, r in rules]

    def rename(key: str) -> str:
        for pattern, repl in compiled:
            key = pattern.sub(repl, key)
        return key
    return rename


# mmcv-1.x BaseTransformerLayer numbers attentions/FFNs in operation order; mmdet 3.x names them.
_HEAD_RULES = [
    # pixel-decoder layers: (self_attn = MSDA, norm, cross_attn = text MHA, norm, ffn, norm)
    (r'^(decode_head\.pixel_decoder\.encoder\.layers\.\d+\.)attentions\.0\.', r'\1self_attn.'),
    (r'^(decode_head\.pixel_decoder\.encoder\.layers\.\d+\.)attentions\.1\.', r'\1cross_attn.'),
    # transformer-decoder layers: (cross_attn, norm, self_attn, norm, ffn, norm)
    (r'^(decode_head\.transformer_decoder\.layers\.\d+\.)attentions\.0\.', r'\1cross_attn.'),
    (r'^(decode_head\.transformer_decoder\.layers\.\d+\.)attentions\.1\.', r'\1self_attn.'),
    (r'^(decode_head\.(pixel_decoder\.encoder|transformer_decoder)\.layers\.\d+\.)ffns\.0\.',
     r'\1ffn.'),
]

_EVA_VISUAL_RULES = [
    (r'\.attn\.q_bias$', '.attn.q_proj.bias'),
    (r'\.attn\.v_bias$', '.attn.v_proj.bias'),
    (r'\.attn\.inner_attn_ln\.', '.attn.norm.'),
    (r'\.mlp\.ffn_ln\.', '.mlp.norm.'),
    (r'\.mlp\.w1\.', '.mlp.fc1_g.'),
    (r'\.mlp\.w2\.', '.mlp.fc1_x.'),
    (r'\.mlp\.w3\.', '.mlp.fc2.'),
]

_CLIP_VISUAL_RULES = [
    (r'^conv1\.', 'patch_embed.proj.'),
    (r'^ln_pre\.', 'norm_pre.'),
    (r'^ln_post\.', 'norm.'),
    (r'^transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$', r'blocks.\1.attn.qkv.\2'),
    (r'^transformer\.resblocks\.(\d+)\.attn\.out_proj\.', r'blocks.\1.attn.proj.'),
    (r'^transformer\.resblocks\.(\d+)\.ln_1\.', r'blocks.\1.norm1.'),
    (r'^transformer\.resblocks\.(\d+)\.ln_2\.', r'blocks.\1.norm2.'),
    (r'^transformer\.resblocks\.(\d+)\.mlp\.c_fc\.', r'blocks.\1.mlp.fc1.'),
    (r'^transformer\.resblocks\.(\d+)\.mlp\.c_proj\.', r'blocks.\1.mlp.fc2.'),
]

_SIGLIP_VISUAL_RULES = [
    (r'^embeddings\.patch_embedding\.', 'patch_embed.proj.'),
    (r'^encoder\.layers\.(\d+)\.self_attn\.out_proj\.', r'blocks.\1.attn.proj.'),
    (r'^encoder\.layers\.(\d+)\.layer_norm1\.', r'blocks.\1.norm1.'),
    (r'^encoder\.layers\.(\d+)\.layer_norm2\.', r'blocks.\1.norm2.'),
    (r'^encoder\.layers\.(\d+)\.mlp\.', r'blocks.\1.mlp.'),
    (r'^post_layernorm\.', 'norm.'),
    (r'^head\.probe$', 'attn_pool.latent'),
    (r'^head\.attention\.out_proj\.', 'attn_pool.proj.'),
    (r'^head\.layernorm\.', 'attn_pool.norm.'),
    (r'^head\.mlp\.', 'attn_pool.mlp.'),
]

_HF_TEXT_RULES = [
    (r'^embeddings\.token_embedding\.', 'token_embedding.'),
    (r'^encoder\.layers\.(\d+)\.self_attn\.out_proj\.', r'transformer.resblocks.\1.attn.out_proj.'),
    (r'^encoder\.layers\.(\d+)\.layer_norm1\.', r'transformer.resblocks.\1.ln_1.'),
    (r'^encoder\.layers\.(\d+)\.layer_norm2\.', r'transformer.resblocks.\1.ln_2.'),
    (r'^encoder\.layers\.(\d+)\.mlp\.fc1\.', r'transformer.resblocks.\1.mlp.c_fc.'),
    (r'^encoder\.layers\.(\d+)\.mlp\.fc2\.', r'transformer.resblocks.\1.mlp.c_proj.'),
    (r'^final_layer_norm\.', 'ln_final.'),
    (r'^head\.', 'text_projection.'),
]

_rename_head = _sub(_HEAD_RULES)
_rename_eva = _sub(_EVA_VISUAL_RULES)
_rename_clip = _sub(_CLIP_VISUAL_RULES)
_rename_siglip = _sub(_SIGLIP_VISUAL_RULES)
_rename_hf_text = _sub(_HF_TEXT_RULES)

_QKV = re.compile(r'^(?P<pre>.*(?:encoder\.layers)\.(?P<i>\d+))\.self_attn\.(?P<p>[qkv])_proj\.'
                  r'(?P<t>weight|bias)$')


def _fuse_qkv(items: dict[str, torch.Tensor], target: str) -> dict[str, torch.Tensor]:
    """Fuse Hugging Face ``q_proj``/``k_proj``/``v_proj`` into one ``in_proj``/``qkv`` tensor.

    ``target``: ``'vision'`` -> ``blocks.N.attn.qkv.{weight,bias}`` (timm);
    ``'text'`` -> ``transformer.resblocks.N.attn.in_proj_{weight,bias}`` (open_clip).
    """
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    rest = {}
    for key, value in items.items():
        m = _QKV.match(key)
        if m is None:
            rest[key] = value
            continue
        parts.setdefault((m['i'], m['t']), {})[m['p']] = value
    for (i, t), qkv in parts.items():
        if set(qkv) != {'q', 'k', 'v'}:
            raise ValueError(f'layer {i}: q/k/v {t} incomplete ({sorted(qkv)})')
        fused = torch.cat([qkv['q'], qkv['k'], qkv['v']], dim=0)
        name = (f'blocks.{i}.attn.qkv.{t}' if target == 'vision'
                else f'transformer.resblocks.{i}.attn.in_proj_{t}')
        rest[name] = fused
    return rest


def _split_siglip_pool(items: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SigLIP head MHA ``in_proj`` (3C, C) -> timm ``attn_pool.q`` (C) and ``attn_pool.kv``."""
    out = dict(items)
    for t in ('weight', 'bias'):
        fused = out.pop(f'head.attention.in_proj_{t}', None)
        if fused is None:
            continue
        c = fused.shape[0] // 3
        out[f'attn_pool.q.{t}'] = fused[:c]
        out[f'attn_pool.kv.{t}'] = fused[c:]
    return out


def _convert_visual(variant: str, visual: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official VLM image-tower keys (``backbone.`` stripped) -> timm keys."""
    if variant == 'eva02':
        return {_rename_eva(k): v for k, v in visual.items()}
    if variant == 'clip':
        out = {}
        for k, v in visual.items():
            if k == 'class_embedding':  # the released tower adds it twice to token 0
                out['cls_token'] = 2 * v.reshape(1, 1, -1)
            elif k == 'positional_embedding':
                out['pos_embed'] = v.unsqueeze(0)
            elif k == 'proj':  # x @ proj  ==  Linear with weight proj.T (no bias)
                out['head.weight'] = v.t().contiguous()
            else:
                out[_rename_clip(k)] = v
        return out
    visual = _split_siglip_pool(_fuse_qkv(visual, 'vision'))
    out = {}
    for k, v in visual.items():
        if k == 'embeddings.position_embedding.weight':
            out['pos_embed'] = v.unsqueeze(0)
        else:
            out[_rename_siglip(k)] = v
    return out


def _convert_text(variant: str, text: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official text-encoder keys (``text_encoder.`` stripped) -> open_clip TextTransformer."""
    if variant != 'siglip':  # EVA-CLIP / OpenAI CLIP text towers already use these names
        return dict(text)
    text = _fuse_qkv(text, 'text')
    out = {}
    for k, v in text.items():
        if k == 'embeddings.position_embedding.weight':
            out['positional_embedding'] = v
        else:
            out[_rename_hf_text(k)] = v
    return out


def convert_official_state_dict(state: Mapping[str, torch.Tensor], variant: str | None = None
                                ) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    """Rename an official MFuser state dict into this project's keys.

    Args:
        state: the official ``state_dict`` (name -> tensor).
        variant: ``'eva02'``, ``'clip'`` or ``'siglip'``; detected from the keys if None.

    Returns:
        ``(converted, dropped, variant)``: the project state dict, ``{official key: why}``
        for what was left out (:data:`DROPPED`), and the variant.
    """
    variant = variant or detect_variant(state)
    if variant not in VARIANTS:
        raise ValueError(f'unknown variant {variant!r}; one of {sorted(VARIANTS)}')
    converted: dict[str, torch.Tensor] = {}
    dropped: dict[str, str] = {}
    visual: dict[str, torch.Tensor] = {}
    text: dict[str, torch.Tensor] = {}
    rules = _DROPPED + (_DROPPED_SIGLIP if variant == 'siglip' else [])
    for key, value in state.items():
        why = next((w for p, w in rules if p.match(key)), None)
        if why is not None:
            dropped[key] = why
        elif key.startswith('backbone.dinov2.'):
            converted['backbone.vfm.' + key[len('backbone.dinov2.'):]] = value
        elif re.match(r'^backbone\.(adapter|adapter_proj[123]|fpn[1-4])\b', key):
            converted[key] = value
        elif key.startswith('backbone.'):
            visual[key[len('backbone.'):]] = value
        elif key.startswith('text_encoder.'):
            text[key[len('text_encoder.'):]] = value
        else:
            converted[_rename_head(key)] = value
    for k, v in _convert_visual(variant, visual).items():
        converted['backbone.vlm.' + k] = v
    for k, v in _convert_text(variant, text).items():
        converted['text_encoder.' + k] = v
    return converted, dropped, variant
