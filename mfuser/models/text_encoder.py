"""The VLM's frozen text tower with CoOp-style learnable context (spec section 4).

Each class name is tokenised once (offline) into ``name_context_length`` tokens
``[SOS, name..., EOS, pad...]``. At every forward the learnable context vectors (owned by the
segmentor, released name ``contexts`` (1, 8, 768)) are inserted right after SOS::

    [SOS, ctx_1 .. ctx_n, name..., EOS, pad...]      (context n + 5 = 13 tokens)

and the frozen text transformer encodes the sequence (causal mask and position embeddings
cut to that length). The token at the EOS position, shifted by the n inserted vectors, goes
through ``ln_final`` and ``text_projection``: one embedding per class.

The text tower is built from open_clip's model configs by name (``open_clip.get_model_config``
and open_clip's text-tower builder); weights come from a local checkpoint, never downloaded.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.registry import MODELS

from mfuser.datasets.label_maps import CITYSCAPES_CLASSES, SYNTHIA_CLASSES_16

__all__ = ['CoOpTextEncoder', 'CLASS_NAME_SETS', 'build_tokenizer']

#: The class names the text queries can be built from (the tables of mfuser.datasets.label_maps).
CLASS_NAME_SETS = {'cityscapes': CITYSCAPES_CLASSES, 'synthia': SYNTHIA_CLASSES_16}


def _resolve_class_names(class_names: Union[str, Sequence[str], None]) -> tuple[str, ...]:
    if class_names is None:
        return CITYSCAPES_CLASSES
    if isinstance(class_names, str):
        if class_names.lower() not in CLASS_NAME_SETS:
            raise ValueError(f'Unknown class-name set {class_names!r}; use one of '
                             f'{sorted(CLASS_NAME_SETS)} or give the list of names.')
        return CLASS_NAME_SETS[class_names.lower()]
    names = tuple(class_names)
    if not names:
        raise ValueError('class_names is empty: give at least one class name.')
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ValueError(f'class_names must be non-empty strings, got {bad!r}.')
    if len(set(names)) != len(names):
        raise ValueError(f'class_names has duplicates: {names!r}.')
    return names


@functools.lru_cache(maxsize=1)
def _simple_tokenizer():
    """open_clip's CLIP BPE tokenizer (vocabulary ships with open_clip; built once)."""
    from open_clip.tokenizer import SimpleTokenizer
    return SimpleTokenizer()


def build_tokenizer(model_cfg: dict, tokenizer: Union[None, str, Callable] = None
                    ) -> tuple[Callable, int]:
    """Offline tokenizer for a model config, and how many start tokens it puts first.

    CLIP and EVA-CLIP use open_clip's ``SimpleTokenizer`` (its BPE vocabulary ships with
    open_clip). The context vectors go after the first token: CLIP's start token, and - as
    released - SigLIP's first word token (SigLIP has no start token).
    Models with a Hugging Face tokenizer (SigLIP) need ``tokenizer``: a local
    tokenizer directory or file (loaded with open_clip's ``HFTokenizer``, which needs the
    ``transformers`` package), or any callable ``(list[str], context_length) -> LongTensor``.
    """
    text_cfg = model_cfg.get('text_cfg', {})
    hf_name = text_cfg.get('hf_tokenizer_name')
    if callable(tokenizer):
        return tokenizer, int(getattr(tokenizer, 'num_start_tokens', 1))
    if tokenizer is None and not hf_name:
        return _simple_tokenizer(), 1
    if tokenizer is None:
        raise ValueError(
            f'This text tower uses the Hugging Face tokenizer {hf_name!r}, which cannot be '
            'downloaded here. Save it locally (e.g. AutoTokenizer.from_pretrained(...)'
            ".save_pretrained('tokenizers/siglip')) and pass tokenizer='tokenizers/siglip'.")
    import os
    if not os.path.exists(str(tokenizer)):
        raise FileNotFoundError(f'tokenizer={tokenizer!r}: no such local tokenizer file/directory.')
    try:
        from open_clip.tokenizer import HFTokenizer
        kwargs = dict(text_cfg.get('tokenizer_kwargs') or {})
        tok = HFTokenizer(str(tokenizer), **kwargs)
    except ImportError as exc:
        raise ImportError('Loading a local Hugging Face tokenizer needs the `transformers` '
                          f'package ({exc}); pip install transformers.') from exc
    return tok, 1


@MODELS.register_module()
class CoOpTextEncoder(BaseModule):
    """Frozen CLIP-family text tower that encodes class names with learnable context.

    Args:
        model_name: open_clip model config name: ``'EVA02-L-14-336'`` (default),
            ``'ViT-L-14-336-quickgelu'`` (OpenAI CLIP), ``'ViT-L-16-SigLIP-384'``.
        class_names: list of class names, or a preset name (``'cityscapes'``, ``'synthia'``).
            Default: the 19 Cityscapes classes.
        n_ctx: number of learnable context vectors the segmentor passes in (default 8).
        name_context_length: tokens per class name incl. start/end tokens (default 5).
        text_cfg: overrides of the open_clip ``text_cfg`` (e.g. ``width``, ``heads``,
            ``layers`` for tiny test towers).
        embed_dim: output embedding size; default the open_clip config's ``embed_dim``. Must
            equal the image tower's projection dim.
        checkpoint: local file with the text tower (BAAI EVA-CLIP ``.pt``: ``text.*``; OpenAI
            ``.pt``; open_clip state dicts). ``None`` keeps random weights.
        tokenizer: see :func:`build_tokenizer` (needed for SigLIP unless ``token_ids``).
        token_ids: the class names' token ids given directly instead of a tokenizer: one row
            of ``name_context_length`` ids per class, in ``class_names`` order, as the text
            tower's own tokenizer makes them (e.g. SigLIP's, run once elsewhere). Checked
            against the class count, the name length and the vocabulary. Where the prompt
            contexts go stays a property of the text model (after the first token). Leave
            ``tokenizer`` unset when giving them.
        init_cfg: unused (weights come from ``checkpoint``).

    Attributes:
        width: token width (the context vectors' last dimension).
        embed_dim: output embedding size E.
        num_classes, class_names: the encoded classes (K).
    """

    def __init__(self,
                 model_name: str = 'EVA02-L-14-336',
                 class_names: Union[str, Sequence[str], None] = None,
                 n_ctx: int = 8,
                 name_context_length: int = 5,
                 text_cfg: dict | None = None,
                 embed_dim: int | None = None,
                 checkpoint: str | None = None,
                 tokenizer: Union[None, str, Callable] = None,
                 token_ids: Sequence[Sequence[int]] | None = None,
                 init_cfg: dict | None = None):
        super().__init__(init_cfg=init_cfg)
        import open_clip
        from open_clip.model import _build_text_tower

        model_cfg = open_clip.get_model_config(model_name)
        if model_cfg is None:
            raise ValueError(f'Unknown open_clip model config {model_name!r}; e.g. '
                             "'EVA02-L-14-336', 'ViT-L-14-336-quickgelu', 'ViT-L-16-SigLIP-384'.")
        cfg_text = dict(model_cfg['text_cfg'], **(text_cfg or {}))
        if cfg_text.get('hf_model_name'):
            raise ValueError(f'{model_name} uses a Hugging Face text model; only open_clip '
                             'TextTransformer towers are supported.')
        if cfg_text.get('embed_cls'):
            raise ValueError(f'{model_name} appends a class token (CoCa); not supported.')
        self.model_name = model_name
        self.class_names = _resolve_class_names(class_names)
        self.num_classes = len(self.class_names)
        self.n_ctx = int(n_ctx)
        self.name_context_length = int(name_context_length)
        if self.n_ctx < 0 or self.name_context_length < 2:
            raise ValueError('n_ctx must be >= 0 and name_context_length >= 2 (start/end).')

        self.context_length = self.n_ctx + self.name_context_length
        pretrained_context = int(cfg_text.get('context_length', 77))
        if self.context_length > pretrained_context:
            raise ValueError(f'n_ctx + name_context_length = {self.context_length} exceeds the '
                             f'text context {pretrained_context}.')
        # As released: the tower holds position embeddings for the prompt length only (13 =
        # 8 + 5 for EVA02-CLIP); a pretrained file's 77 rows are cut to the first 13 on load.
        cfg_text['context_length'] = self.context_length
        text = _build_text_tower(int(embed_dim or model_cfg['embed_dim']), cfg_text,
                                 quick_gelu=bool(model_cfg.get('quick_gelu', False)))
        # The text tower's modules live directly on this encoder, so its keys are the
        # open_clip/OpenAI names (token_embedding, positional_embedding, transformer.*,
        # ln_final, text_projection).
        self.token_embedding = text.token_embedding
        self.positional_embedding = text.positional_embedding
        self.transformer = text.transformer
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        self.pool_type = text.pool_type
        self.eos_id = text.eos_id
        causal = text.attn_mask
        self.register_buffer('attn_mask', None if causal is None else causal.clone(),
                             persistent=False)
        self.width = int(text.width)
        if self.text_projection is None:
            self.embed_dim = self.width
        elif isinstance(self.text_projection, nn.Linear):
            self.embed_dim = int(self.text_projection.out_features)
        else:
            self.embed_dim = int(self.text_projection.shape[1])

        if token_ids is not None:
            if tokenizer is not None:
                raise ValueError('model.text_encoder: give either token_ids or tokenizer, not '
                                 'both (set model.text_encoder.tokenizer=None).')
            tokens = self._check_token_ids(token_ids)
            self.num_start_tokens = 1  # CLIP: after SOT; SigLIP (no SOT): after the first word
        else:
            tok, self.num_start_tokens = build_tokenizer(model_cfg, tokenizer)
            with torch.device('cpu'):  # token ids are data, also when built on 'meta'
                tokens = tok(list(self.class_names), context_length=self.name_context_length)
                tokens = torch.as_tensor(tokens, dtype=torch.long, device='cpu')
            if tokens.shape != (self.num_classes, self.name_context_length):
                raise ValueError(f'tokenizer returned shape {tuple(tokens.shape)}, expected '
                                 f'({self.num_classes}, {self.name_context_length}).')
            if int(tokens.max()) >= self.token_embedding.num_embeddings:
                raise ValueError(f'token id {int(tokens.max())} is outside the text vocabulary '
                                 f'({self.token_embedding.num_embeddings}); wrong tokenizer?')
        self.register_buffer('tokens', tokens, persistent=False)  # (K, name_context_length)

        #: the pretrained file's ``logit_scale`` / ``logit_bias`` (None without a file)
        self.logit_scale = self.logit_bias = None
        if checkpoint is not None:
            from .pretrained import load_text_tower
            scalars = load_text_tower(self, checkpoint,
                                      config_key='model.text_encoder.checkpoint')
            self.logit_scale = scalars.get('logit_scale')
            self.logit_bias = scalars.get('logit_bias')
        self.requires_grad_(False)
        self.eval()
        print_log(f'CoOpTextEncoder({model_name}): {self.num_classes} classes, width '
                  f'{self.width}, embed_dim {self.embed_dim}', logger='current',
                  level=logging.DEBUG)

    def _check_token_ids(self, token_ids) -> torch.Tensor:
        """``token_ids`` as a (K, name_context_length) LongTensor, or a one-line ValueError
        naming ``model.text_encoder.token_ids``."""
        key = 'model.text_encoder.token_ids'
        try:
            rows = [[int(i) for i in row] for row in token_ids]
            if any(isinstance(i, bool) or int(i) != i for row in token_ids for i in row):
                raise TypeError
        except (TypeError, ValueError):
            raise ValueError(f'{key} must be a list of integer lists (one per class), got '
                             f'{token_ids!r:.80}') from None
        if len(rows) != self.num_classes:
            raise ValueError(f'{key} has {len(rows)} rows but there are {self.num_classes} '
                             'class names (model.text_encoder.class_names): one row per class.')
        bad = [i for i, row in enumerate(rows) if len(row) != self.name_context_length]
        if bad:
            raise ValueError(f'{key} row {bad[0]} has {len(rows[bad[0]])} ids; every row needs '
                             f'name_context_length={self.name_context_length} ids.')
        with torch.device('cpu'):
            tokens = torch.tensor(rows, dtype=torch.long, device='cpu')
        vocab = self.token_embedding.num_embeddings
        if int(tokens.min()) < 0 or int(tokens.max()) >= vocab:
            worst = int(tokens.min()) if int(tokens.min()) < 0 else int(tokens.max())
            raise ValueError(f'{key} holds the id {worst}, outside the vocabulary of '
                             f'{self.model_name} [0, {vocab}).')
        if self.pool_type == 'eos' and not bool((tokens == self.eos_id).any(1).all()):
            raise ValueError(f'{key}: every row needs the end token {self.eos_id}; this text '
                             'tower pools at it.')
        return tokens

    def train(self, mode: bool = True) -> CoOpTextEncoder:
        """The text tower is frozen: it always stays in eval mode."""
        super().train(False)
        return self

    def init_weights(self) -> None:
        """No-op: weights come from ``checkpoint`` at construction (never re-initialised)."""
        self._is_init = True

    def _pool_index(self) -> torch.Tensor:
        """Position (K,) of the pooled token in the context-extended sequence."""
        if self.pool_type == 'argmax':  # EOS has the largest id in the CLIP vocabulary
            return self.tokens.argmax(dim=-1) + self.n_ctx
        if self.pool_type == 'eos':
            return (self.tokens == self.eos_id).int().argmax(dim=-1) + self.n_ctx
        if self.pool_type == 'last':
            return torch.full_like(self.tokens[:, 0], self.context_length - 1)
        if self.pool_type == 'first':
            return torch.zeros_like(self.tokens[:, 0])
        raise ValueError(f'Unsupported text pool type {self.pool_type!r}.')

    def forward(self, contexts: torch.Tensor) -> torch.Tensor:
        """Encode every class name with the given context vectors.

        Args:
            contexts: (1, n_ctx, width) or (n_ctx, width) shared context vectors (the
                segmentor's ``contexts`` parameter: the K prompts are then encoded once per
                forward, not once per sample), or (B, n_ctx, width) per-sample contexts.

        Returns:
            (K, E) for a shared context (leading dim 1 or 2-D input), else (B, K, E) class
            embeddings (not normalised).
        """
        if contexts.dim() == 2:
            contexts = contexts.unsqueeze(0)
        squeeze = contexts.dim() == 3 and contexts.shape[0] == 1
        if contexts.dim() != 3 or contexts.shape[1:] != (self.n_ctx, self.width):
            raise ValueError(f'contexts must be (B, {self.n_ctx}, {self.width}) or '
                             f'({self.n_ctx}, {self.width}), got {tuple(contexts.shape)}.')
        B, K, W = contexts.shape[0], self.num_classes, self.width
        names = self.token_embedding(self.tokens).to(contexts.dtype)  # (K, Ln, W)
        s = self.num_start_tokens
        x = torch.cat([
            names[None, :, :s].expand(B, -1, -1, -1),
            contexts[:, None].expand(-1, K, -1, -1),
            names[None, :, s:].expand(B, -1, -1, -1),
        ], dim=2).reshape(B * K, self.context_length, W)
        x = x + self.positional_embedding[:self.context_length].to(x.dtype)
        mask = None if self.attn_mask is None else self.attn_mask.to(x.dtype)
        x = self.transformer(x, attn_mask=mask)
        x = self.ln_final(x)
        index = self._pool_index().repeat(B)
        x = x[torch.arange(B * K, device=x.device), index]
        if isinstance(self.text_projection, nn.Linear):
            x = self.text_projection(x)
        elif self.text_projection is not None:
            x = x @ self.text_projection
        x = x.reshape(B, K, -1)
        return x[0] if squeeze else x
