"""Text-queried Mask2Former head (one query per class, identity assignment).

Built on mmseg's ``Mask2FormerHead`` (itself mmdet's): the transformer decoder, the
per-layer prediction (``_forward_head``), the point-sampled mask/dice losses and the
classification loss are mmdet's. What differs, following MFuser / tqdm:

* the K queries come from the (refined) class-text embeddings through an MLP
  (E -> 256 -> 256) plus a learnable query position embedding (K x 256);
* query k is tied to class k: no Hungarian matching; a class absent from the image gives
  its query the "no object" target;
* the pixel decoder's encoder layers also attend to the text embeddings
  (:class:`TextMSDeformAttnPixelDecoder`).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmseg.models.decode_heads.mask2former_head import Mask2FormerHead
from mmseg.registry import MODELS

from .text_pixel_decoder import TextMSDeformAttnPixelDecoder  # noqa: F401 (registers)

_DEFAULT_LOSS_CLS = dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0,
                         reduction='mean')
_DEFAULT_LOSS_MASK = dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, reduction='mean',
                          loss_weight=5.0)
_DEFAULT_LOSS_DICE = dict(type='mmdet.DiceLoss', use_sigmoid=True, activate=True,
                          reduction='mean', naive_dice=True, eps=1.0, loss_weight=5.0)


def _mmseg_cfg(cfg: dict) -> ConfigDict:
    """``cfg`` as a ConfigDict whose ``type`` is the class mmseg's registry resolves, for the
    mmdet parent to build (its registry resolves names in mmdet's scope, not ours)."""
    cfg = ConfigDict(copy.deepcopy(cfg))
    if isinstance(cfg.get('type'), str):
        cfg.type = MODELS.get(cfg.type) or cfg.type  # unknown: the parent's build reports it
    return cfg


def _register_before(module: nn.Module, anchor: str, name: str, child: nn.Module) -> None:
    """Add submodule ``name`` just before ``anchor`` in ``module``'s registration order."""
    items = list(module._modules.items())
    at = [key for key, _ in items].index(anchor)
    module._modules.clear()
    module._modules.update(items[:at] + [(name, child)] + items[at:])


@MODELS.register_module()
class TextQueriedMask2FormerHead(Mask2FormerHead):
    """Mask2Former decoding with class-text queries.

    Args:
        in_channels: channels of the 4 input maps, finest first (``[2048] * 4`` at ViT-L).
        strides: their strides relative to the input image.
        feat_channels / out_channels: pixel-decoder and mask-feature width (256).
        num_classes: K; also the number of queries.
        text_dim: width E of the text embeddings (768 for EVA02-CLIP-L).
        pixel_decoder: :class:`TextMSDeformAttnPixelDecoder` settings.
        transformer_decoder: mmdet ``Mask2FormerTransformerDecoder`` settings (9 layers).
        loss_cls / loss_mask / loss_dice: mmdet loss configs; ``class_weight`` of loss_cls
            defaults to ``[1.0] * K + [no_object_weight]``.
        no_object_weight: weight of the "no object" class (0.1).
        train_cfg: ``num_points`` (12544), ``oversample_ratio`` (3.0),
            ``importance_sample_ratio`` (0.75) for the point-sampled mask losses.
        mmdet_init: what ``init_weights()`` (called by mmengine's Runner before training)
            does. ``False`` (default, as released: the official training never calls the
            head's ``init_weights``): nothing, the constructors' initialisation stays (incl.
            mmcv's deformable-attention init). ``True``: mmdet's Mask2Former init (xavier
            transformer decoder, caffe2-xavier convolutions, MSDA init).
        num_transformer_feat_level / enforce_decoder_input_project / test_cfg /
            align_corners / ignore_index / init_cfg: as for mmseg's ``Mask2FormerHead``. The
            signature is closed (no ``**kwargs``), so a misspelt or foreign argument fails,
            and ``--cfg-options`` only accepts what this head takes.

    forward(feats, text): feats 4 maps (B, C_i, H_i, W_i), text (B, K, E) ->
    per-decoder-layer class logits (B, K, K+1) and mask logits (B, K, H_0, W_0).

    Construction: the parents' ``__init__`` builds everything (pixel decoder, transformer
    decoder, input projections, ``query_embed`` = query positions, ``level_embed``,
    ``cls_embed``, ``mask_embed``, losses) with K queries and ``train_cfg=None``, so no
    Hungarian assigner/sampler is built; this head then drops ``query_feat``, adds the text
    MLP ``text_proj`` and sets the point-sampling settings of ``train_cfg``. The module tree
    and the state dict (names, shapes and order) are those of the hand-built head before
    issue 22, so the released checkpoints load.

    Random stream (issue 22): for a fixed seed the pixel decoder, the transformer decoder and
    the input projections get the same initial values as when this head built its modules by
    hand (they are drawn first, in the same order). The rest are drawn in the parents' order
    (``query_embed``, the dropped ``query_feat``, ``level_embed``, mmdet's ``cls_embed``
    that mmseg's replaces, ``mask_embed``, mmseg's ``cls_embed``) and then ``text_proj``,
    where the hand-built head drew ``text_proj``, ``query_embed``, ``level_embed``,
    ``cls_embed``, ``mask_embed``: those five get other values (same distributions), and
    the stream left to modules built after the head is advanced further (by the dropped
    ``query_feat`` and mmdet's ``cls_embed``).
    """

    def __init__(self,
                 in_channels: list[int],
                 strides: list[int] = (4, 8, 16, 32),
                 feat_channels: int = 256,
                 out_channels: int = 256,
                 num_classes: int = 19,
                 text_dim: int = 768,
                 num_transformer_feat_level: int = 3,
                 pixel_decoder: dict | None = None,
                 enforce_decoder_input_project: bool = False,
                 transformer_decoder: dict | None = None,
                 positional_encoding: dict | None = None,
                 loss_cls: dict | None = None,
                 loss_mask: dict | None = None,
                 loss_dice: dict | None = None,
                 no_object_weight: float = 0.1,
                 train_cfg: dict | None = None,
                 test_cfg: dict | None = None,
                 align_corners: bool = False,
                 ignore_index: int = 255,
                 mmdet_init: bool = False,
                 init_cfg: dict | list | None = None):
        if pixel_decoder is None or transformer_decoder is None:
            raise ValueError('TextQueriedMask2FormerHead needs `pixel_decoder` and '
                             '`transformer_decoder` configs (see configs/_base_/models).')
        pixel_decoder = dict(copy.deepcopy(pixel_decoder))
        pixel_decoder.setdefault('type', 'TextMSDeformAttnPixelDecoder')
        pixel_decoder.update(strides=list(strides), text_dim=text_dim, num_classes=num_classes)
        loss_cls = dict(copy.deepcopy(loss_cls or _DEFAULT_LOSS_CLS))
        loss_cls.setdefault('class_weight', [1.0] * num_classes + [no_object_weight])
        if len(loss_cls['class_weight']) != num_classes + 1:
            raise ValueError(f'loss_cls.class_weight has {len(loss_cls["class_weight"])} '
                             f'entries; expected num_classes + 1 = {num_classes + 1}')
        super().__init__(
            in_channels=list(in_channels), feat_channels=feat_channels,
            out_channels=out_channels, num_classes=num_classes,
            num_things_classes=num_classes, num_stuff_classes=0, num_queries=num_classes,
            pixel_decoder=_mmseg_cfg(pixel_decoder),
            transformer_decoder=ConfigDict(copy.deepcopy(transformer_decoder)),
            positional_encoding=positional_encoding or dict(num_feats=feat_channels // 2,
                                                            normalize=True),
            loss_cls=_mmseg_cfg(loss_cls), loss_mask=_mmseg_cfg(loss_mask or _DEFAULT_LOSS_MASK),
            loss_dice=_mmseg_cfg(loss_dice or _DEFAULT_LOSS_DICE),
            train_cfg=None,  # no Hungarian assigner/sampler: identity assignment, get_targets
            num_transformer_feat_level=num_transformer_feat_level,
            enforce_decoder_input_project=enforce_decoder_input_project, test_cfg=test_cfg,
            align_corners=align_corners, ignore_index=ignore_index, init_cfg=init_cfg)
        self.in_channels, self.text_dim = list(in_channels), text_dim
        self.mmdet_init = bool(mmdet_init)
        # The query features come from the text (the learned query_feat goes); the query
        # positions stay the parent's learned query_embed. text_proj keeps its place before
        # query_embed (the parameter order indexes the optimizer states of saved checkpoints).
        del self.query_feat
        _register_before(self, 'query_embed', 'text_proj', nn.Sequential(
            nn.Linear(text_dim, feat_channels), nn.ReLU(inplace=True),
            nn.Linear(feat_channels, feat_channels)))
        self.train_cfg = train_cfg = dict(train_cfg or {})
        self.assigner = self.sampler = None  # query k <- class k (get_targets)
        self.num_points = train_cfg.get('num_points', 12544)
        self.oversample_ratio = train_cfg.get('oversample_ratio', 3.0)
        self.importance_sample_ratio = train_cfg.get('importance_sample_ratio', 0.75)

    def init_weights(self) -> None:
        if not self.mmdet_init:  # as released: keep the constructors' initialisation
            self._is_init = True
            return
        super().init_weights()

    # ----------------------------------------------------------------------------------
    # targets: identity assignment
    def get_targets(self, cls_scores_list, mask_preds_list, batch_gt_instances,
                    batch_img_metas, return_sampling_results=False):
        """Query k <- class k. Returns per-image labels (K,), label weights (K,), mask
        targets of the present classes in ascending class order (P_i, H, W), mask weights
        (K,) and the average factor (number of positive queries, at least 1 per image)."""
        labels_list, label_weights_list, mask_targets_list, mask_weights_list = [], [], [], []
        avg_factor = 0
        for cls_score, gt in zip(cls_scores_list, batch_gt_instances):
            gt_labels = gt.labels.long()
            if gt_labels.numel() and (gt_labels.min() < 0 or
                                      gt_labels.max() >= self.num_classes):
                raise ValueError(
                    f'ground-truth class ids {gt_labels.tolist()} outside [0, '
                    f'{self.num_classes}) (ignore index is {self.ignore_index}); check the '
                    'data set conversion (train IDs) and num_classes')
            order = torch.argsort(gt_labels)
            gt_labels = gt_labels[order]
            labels = gt_labels.new_full((self.num_queries, ), self.num_classes)
            labels[gt_labels] = gt_labels
            mask_weights = cls_score.new_zeros((self.num_queries, ))
            mask_weights[gt_labels] = 1.0
            labels_list.append(labels)
            label_weights_list.append(gt_labels.new_ones((self.num_queries, )))
            mask_targets_list.append(gt.masks[order])
            mask_weights_list.append(mask_weights)
            avg_factor += max(gt_labels.numel(), 1)
        return (labels_list, label_weights_list, mask_targets_list, mask_weights_list,
                avg_factor)

    # ----------------------------------------------------------------------------------
    def forward(self, x: list[torch.Tensor], text: torch.Tensor):
        """x: 4 maps finest first; text (B, K, E). Returns lists (one per prediction
        stage: the initial queries and each decoder layer) of class logits (B, K, K+1)
        and mask logits (B, K, H_0, W_0)."""
        batch_size = x[0].shape[0]
        if text.shape[1] != self.num_queries:
            raise ValueError(f'got {text.shape[1]} text embeddings for a head with '
                             f'{self.num_queries} classes')
        mask_features, memories = self.pixel_decoder(x, text)
        decoder_inputs, decoder_pos = [], []
        for i in range(self.num_transformer_feat_level):
            inp = self.decoder_input_projs[i](memories[i]).flatten(2).transpose(1, 2)
            decoder_inputs.append(inp + self.level_embed.weight[i].view(1, 1, -1))
            no_pad = inp.new_zeros((batch_size, ) + memories[i].shape[-2:], dtype=torch.bool)
            decoder_pos.append(
                self.decoder_positional_encoding(no_pad).flatten(2).transpose(1, 2))
        query_feat = self.text_proj(text)
        query_embed = self.query_embed.weight.unsqueeze(0).expand(batch_size, -1, -1)

        cls_pred, mask_pred, attn_mask = self._forward_head(
            query_feat, mask_features, memories[0].shape[-2:])
        cls_preds, mask_preds = [cls_pred], [mask_pred]
        for i in range(self.num_transformer_decoder_layers):
            level = i % self.num_transformer_feat_level
            # a query whose mask covers nothing attends everywhere
            attn_mask = attn_mask & (attn_mask.sum(-1) != attn_mask.shape[-1]).unsqueeze(-1)
            query_feat = self.transformer_decoder.layers[i](
                query=query_feat, key=decoder_inputs[level], value=decoder_inputs[level],
                query_pos=query_embed, key_pos=decoder_pos[level], cross_attn_mask=attn_mask,
                query_key_padding_mask=None, key_padding_mask=None)
            cls_pred, mask_pred, attn_mask = self._forward_head(
                query_feat, mask_features,
                memories[(i + 1) % self.num_transformer_feat_level].shape[-2:])
            cls_preds.append(cls_pred)
            mask_preds.append(mask_pred)
        return cls_preds, mask_preds

    def loss(self, x, text, batch_data_samples, train_cfg=None) -> dict:
        """Deep-supervised classification, mask-BCE and dice losses."""
        batch_gt_instances, batch_img_metas = self._seg_data_to_instance_data(
            batch_data_samples)
        cls_preds, mask_preds = self(x, text)
        return self.loss_by_feat(cls_preds, mask_preds, batch_gt_instances, batch_img_metas)

    def predict(self, x, text, size: tuple[int, int], test_cfg=None) -> torch.Tensor:
        """Semantic logits (B, K, *size): softmax(class)[..., :-1] x sigmoid(mask)."""
        cls_preds, mask_preds = self(x, text)
        return self.semantic_inference(cls_preds[-1], mask_preds[-1], size)

    @staticmethod
    def semantic_inference(cls_logits: torch.Tensor, mask_logits: torch.Tensor,
                           size: tuple[int, int]) -> torch.Tensor:
        """(B, Q, K+1), (B, Q, h, w) -> (B, K, *size).

        As released: class probabilities (softmax, "no object" dropped) times mask
        probabilities (sigmoid), summed over queries at the mask resolution (h, w); the
        result is then resized bilinearly (``align_corners=False``) to ``size``.
        """
        scores = F.softmax(cls_logits, dim=-1)[..., :-1]
        seg = torch.einsum('bqc,bqhw->bchw', scores, mask_logits.sigmoid())
        if tuple(seg.shape[-2:]) != tuple(size):
            seg = F.interpolate(seg, size=tuple(size), mode='bilinear', align_corners=False)
        return seg
