"""The MFuser segmentor: fused VFM x VLM encoder, text refinement, text-queried decoding.

Data flow for a batch of images (B, 3, H, W), normalised for the VLM:

1. ``backbone`` (:class:`~mfuser.models.backbones.FusedEncoder`) ->
   4 feature maps for the head, the global embedding (B, 1, E) and the dense visual
   embeddings (B, E, h, w).
2. ``text_encoder`` (frozen VLM text tower) encodes the class names with the learnable
   prompt ``contexts`` -> (K, E). It does not depend on the image, so it runs once per
   forward (and once per image for all sliding-window crops).
3. ``context_decoder`` (MTEnhancer stack) refines the text with the image:
   text = text + gamma * context_decoder(text, [global ; dense]) -> (B, K, E).
4. Pixel-text score map S = <dense / |dense|, text / |text|> (B, K, h, w); training adds
   the vision-language regularisation CE(S / tau, label) ("vl.loss_ce").
5. ``decode_head`` (:class:`~mfuser.models.heads.TextQueriedMask2FormerHead`) decodes with
   one query per class.

Parameter names of the trainable parts (``contexts``, ``gamma``, ``context_decoder``,
``backbone.adapter``) follow the released MFuser checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import add_prefix

#: The score-map loss as released: CE on ``score_map / tau``, mean over all pixels.
DEFAULT_LOSS_VL = dict(type='CrossEntropyLoss', loss_weight=1.0, avg_non_ignore=False)


@MODELS.register_module()
class MFuser(EncoderDecoder):
    """MFuser segmentor.

    Args:
        backbone: fused encoder config (returns ``(feats, global_emb, dense_emb)``).
        text_encoder: frozen text tower config (``forward(contexts) -> (K, E)``; exposes
            ``width``, ``embed_dim``, ``num_classes``, ``class_names``).
        context_decoder: MTEnhancer stack config (``forward(text, visual) -> (B, K, E)``).
        decode_head: text-queried Mask2Former head config.
        n_ctx: number of learnable prompt context vectors (8).
        tau: temperature of the score-map regularisation (0.07).
        loss_vl: loss on the score map. Default as released: mmseg CE, weight 1.0, averaged
            over all pixels, ignored ones included (``avg_non_ignore=False``). ``None``
            switches the score-map loss off.
        gamma_init: ``'reference'`` reproduces the released code (a truncated-normal(0, 1)
            draw over the 1e-4 fill); a float fills gamma with that value.
        score_logits: how the score-map loss turns cosines into logits: ``'tau'`` (EVA02 and
            CLIP as released: ``score_map / tau``) or ``'pretrained'`` (SigLIP as released:
            ``score_map * exp(logit_scale) + logit_bias``, both read from the text tower's
            pretrained file, ``model.text_encoder.checkpoint``).
        contexts_init_std: std of the truncated-normal (cut at +-2) init of the prompt
            ``contexts``. Default 1.0 as released (``nn.init.trunc_normal_`` defaults);
            CoOp's original init is 0.02.
    """

    def __init__(self,
                 backbone: dict,
                 text_encoder: dict,
                 context_decoder: dict,
                 decode_head: dict,
                 n_ctx: int = 8,
                 tau: float = 0.07,
                 loss_vl: dict | None = DEFAULT_LOSS_VL,
                 gamma_init: str | float = 'reference',
                 contexts_init_std: float = 1.0,
                 score_logits: str = 'tau',
                 neck: dict | None = None,
                 auxiliary_head: dict | None = None,
                 train_cfg: dict | None = None,
                 test_cfg: dict | None = None,
                 data_preprocessor: dict | None = None,
                 pretrained: str | None = None,
                 init_cfg=None):
        super().__init__(backbone=backbone, decode_head=decode_head, neck=neck,
                         auxiliary_head=auxiliary_head, train_cfg=train_cfg,
                         test_cfg=test_cfg, data_preprocessor=data_preprocessor,
                         pretrained=pretrained, init_cfg=init_cfg)
        self.text_encoder = MODELS.build(text_encoder)
        self.context_decoder = MODELS.build(context_decoder)
        for p in self.text_encoder.parameters():
            p.requires_grad_(False)
        num_text = self.text_encoder.num_classes
        if num_text != self.decode_head.num_classes:
            raise ValueError(
                f'text_encoder has {num_text} class names but decode_head.num_classes is '
                f'{self.decode_head.num_classes}; set both from the same class list')
        embed_dim = self.text_encoder.embed_dim
        backbone_dim = getattr(self.backbone, 'embed_dim', embed_dim)
        if backbone_dim != embed_dim:
            raise ValueError(f'backbone embedding width {backbone_dim} != text embedding '
                             f'width {embed_dim}: the VLM vision and text towers must match')
        self._check_widths(embed_dim)
        self.tau = tau
        if score_logits not in ('tau', 'pretrained'):
            raise ValueError(f"score_logits must be 'tau' or 'pretrained', got {score_logits!r}")
        self.score_logits = score_logits
        self.contexts = nn.Parameter(torch.empty(1, n_ctx, self.text_encoder.width))
        nn.init.trunc_normal_(self.contexts, std=float(contexts_init_std), a=-2.0, b=2.0)
        self.gamma = nn.Parameter(torch.full((embed_dim, ), 1e-4))
        if gamma_init == 'reference':
            nn.init.trunc_normal_(self.gamma, mean=0.0, std=1.0, a=-2.0, b=2.0)
        elif isinstance(gamma_init, (int, float)):
            nn.init.constant_(self.gamma, float(gamma_init))
        else:
            raise ValueError(f"gamma_init must be 'reference' or a number, got {gamma_init!r}")
        self.loss_vl = MODELS.build(loss_vl) if loss_vl is not None else None

    def _check_widths(self, embed_dim: int) -> None:
        """The head and the MTEnhancer must take the widths the encoders give (swapping a
        tower changes them); say which config key to set instead of failing in a matmul."""
        problems = []
        out = list(getattr(self.backbone, 'out_channels', None) or [])
        head_in = getattr(self.decode_head, 'in_channels', None)
        if out and head_in is not None and list(head_in) != out:
            problems.append(f'decode_head.in_channels is {list(head_in)} but the backbone '
                            f'gives {out} (VFM width + VLM width per level): set '
                            f'decode_head.in_channels={out}')
        for key, width in (('decode_head.text_dim', getattr(self.decode_head, 'text_dim', None)),
                           ('context_decoder.visual_dim',
                            getattr(self.context_decoder, 'visual_dim', None))):
            if width is not None and width != embed_dim:
                problems.append(f'{key} is {width} but the VLM embedding width is {embed_dim}: '
                                f'set {key}={embed_dim}')
        if problems:
            raise ValueError('the model config does not fit its towers:\n  - ' +
                             '\n  - '.join(problems))

    def train(self, mode: bool = True):
        super().train(mode)
        self.text_encoder.eval()  # frozen: no dropout, fixed statistics
        return self

    # ------------------------------------------------------------------ text side
    def text_embeddings(self) -> torch.Tensor:
        """Class-text embeddings with the learnable prompt, (K, E)."""
        return self.text_encoder(self.contexts)

    def refine_text(self, text: torch.Tensor, global_emb: torch.Tensor,
                    dense_emb: torch.Tensor) -> torch.Tensor:
        """(K, E), (B, 1, E), (B, E, h, w) -> image-conditioned text (B, K, E)."""
        batch = dense_emb.shape[0]
        visual = torch.cat([global_emb, dense_emb.flatten(2).transpose(1, 2)], dim=1)
        text = text.to(visual.dtype).unsqueeze(0).expand(batch, -1, -1)
        return text + self.gamma * self.context_decoder(text, visual)

    def score_map_logits(self, score: torch.Tensor) -> torch.Tensor:
        """Cosine score map -> logits of the score-map loss (see ``score_logits``)."""
        if self.score_logits == 'tau':
            return score / self.tau
        scale = getattr(self.text_encoder, 'logit_scale', None)
        if scale is None:
            raise RuntimeError(
                "score_logits='pretrained' needs the text tower's logit_scale/logit_bias, "
                'which come from its pretrained file: set model.text_encoder.checkpoint to the '
                "SigLIP file, or use score_logits='tau'.")
        bias = getattr(self.text_encoder, 'logit_bias', None) or 0.0
        return score * float(torch.tensor(scale).exp()) + bias

    @staticmethod
    def score_map(text: torch.Tensor, dense_emb: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every pixel with every class: (B, K, h, w)."""
        return torch.einsum('bchw,bkc->bkhw', F.normalize(dense_emb, dim=1),
                            F.normalize(text, dim=2))

    # ------------------------------------------------------------------ shared forward
    def extract_feat(self, inputs: torch.Tensor):
        """Backbone features: ``(feats, global_emb, dense_emb)``."""
        return self.backbone(inputs)

    def _encode(self, inputs: torch.Tensor, text: torch.Tensor | None = None):
        feats, global_emb, dense_emb = self.extract_feat(inputs)
        if text is None:
            text = self.text_embeddings()
        return feats, self.refine_text(text, global_emb, dense_emb), dense_emb

    def loss(self, inputs: torch.Tensor, data_samples) -> dict:
        feats, text, dense_emb = self._encode(inputs)
        losses = add_prefix(self.decode_head.loss(feats, text, data_samples, self.train_cfg),
                            'decode')
        if self.loss_vl is not None:
            labels = torch.stack([s.gt_sem_seg.data for s in data_samples]).squeeze(1).long()
            scores = resize(self.score_map_logits(self.score_map(text, dense_emb)),
                            size=labels.shape[-2:], mode='bilinear', align_corners=False)
            losses['vl.loss_ce'] = self.loss_vl(scores, labels,
                                                ignore_index=self.decode_head.ignore_index)
        return losses

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: list[dict],
                      text: torch.Tensor | None = None) -> torch.Tensor:
        """Semantic logits (B, K, H, W) at the size of ``inputs``."""
        feats, text, _ = self._encode(inputs, text)
        return self.decode_head.predict(feats, text, size=inputs.shape[-2:],
                                        test_cfg=self.test_cfg)

    def inference(self, inputs: torch.Tensor, batch_img_metas: list[dict]) -> torch.Tensor:
        mode = self.test_cfg.get('mode', 'whole') if self.test_cfg else 'whole'
        if mode not in ('whole', 'slide'):
            raise ValueError(f"test_cfg.mode must be 'whole' or 'slide', got {mode!r}")
        text = self.text_embeddings()  # once for the whole batch and all crops
        if mode == 'whole':
            return self.encode_decode(inputs, batch_img_metas, text)
        return self.slide_inference(inputs, batch_img_metas, text)

    def slide_inference(self, inputs: torch.Tensor, batch_img_metas: list[dict],
                        text: torch.Tensor | None = None) -> torch.Tensor:
        """Average of overlapping ``test_cfg.crop_size`` windows every ``test_cfg.stride``."""
        h_stride, w_stride = self.test_cfg['stride']
        h_crop, w_crop = self.test_cfg['crop_size']
        batch, _, h_img, w_img = inputs.shape
        if text is None:
            text = self.text_embeddings()
        h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
        w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
        preds = inputs.new_zeros((batch, self.out_channels, h_img, w_img))
        count = inputs.new_zeros((batch, 1, h_img, w_img))
        for h_idx in range(h_grids):
            for w_idx in range(w_grids):
                y2 = min(h_idx * h_stride + h_crop, h_img)
                x2 = min(w_idx * w_stride + w_crop, w_img)
                y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
                crop = inputs[:, :, y1:y2, x1:x2]
                preds[:, :, y1:y2, x1:x2] += self.encode_decode(crop, batch_img_metas, text)
                count[:, :, y1:y2, x1:x2] += 1
        return preds / count

    def _forward(self, inputs: torch.Tensor, data_samples=None):
        """Raw head outputs (class and mask logits per decoder stage)."""
        feats, text, _ = self._encode(inputs)
        return self.decode_head.forward(feats, text)
