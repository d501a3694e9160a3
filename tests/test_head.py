"""Text-queried Mask2Former head: shapes, identity assignment, losses, inference."""
import copy
import math

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from tiny_models import tiny_head_cfg

import mfuser  # noqa: F401


def feats_for(batch, grid=(8, 8), ch=16):
    h, w = grid
    return [torch.randn(batch, ch, h * 4 // s, w * 4 // s) for s in (1, 2, 4, 8)]


def sample_with(label: torch.Tensor) -> SegDataSample:
    s = SegDataSample(metainfo=dict(img_shape=label.shape, pad_shape=label.shape))
    s.gt_sem_seg = PixelData(data=label[None])
    return s


def test_forward_shapes():
    head = MODELS.build(tiny_head_cfg())
    head.init_weights()
    feats = feats_for(2)
    cls_preds, mask_preds = head(feats, torch.randn(2, 5, 32))
    assert len(cls_preds) == len(mask_preds) == 1 + 3  # initial queries + 3 layers
    assert cls_preds[-1].shape == (2, 5, 6)
    assert mask_preds[-1].shape == (2, 5, 32, 32)  # finest level (stride 4)


def stock_mask2former_head(cfg):
    """mmseg's own Mask2FormerHead (mmdet pixel decoder, Hungarian matching) at the size of
    the text-queried head config ``cfg``."""
    from mmseg.models.decode_heads.mask2former_head import Mask2FormerHead
    k = cfg['num_classes']
    pixel_decoder = copy.deepcopy(cfg['pixel_decoder'])
    pixel_decoder['type'] = 'mmdet.MSDeformAttnPixelDecoder'
    del pixel_decoder['encoder']['layer_cfg']['text_cross_attn_cfg']
    losses = dict(
        loss_cls=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0,
                      reduction='mean', class_weight=[1.0] * k + [0.1]),
        loss_mask=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, reduction='mean',
                       loss_weight=5.0),
        loss_dice=dict(type='mmdet.DiceLoss', use_sigmoid=True, activate=True, reduction='mean',
                       naive_dice=True, eps=1.0, loss_weight=5.0))
    assigner = dict(type='mmdet.HungarianAssigner', match_costs=[
        dict(type='mmdet.ClassificationCost', weight=2.0),
        dict(type='mmdet.CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
        dict(type='mmdet.DiceCost', weight=5.0, pred_act=True, eps=1.0)])
    train_cfg = dict(cfg['train_cfg'], assigner=assigner,
                     sampler=dict(type='mmdet.MaskPseudoSampler'))
    return Mask2FormerHead(
        in_channels=cfg['in_channels'], feat_channels=cfg['feat_channels'],
        out_channels=cfg['out_channels'], num_classes=k, num_things_classes=k,
        num_stuff_classes=0, num_queries=k, pixel_decoder=ConfigDict(pixel_decoder),
        transformer_decoder=ConfigDict(cfg['transformer_decoder']),
        positional_encoding=ConfigDict(cfg['positional_encoding']),
        train_cfg=ConfigDict(train_cfg), **{key: ConfigDict(v) for key, v in losses.items()})


def test_head_is_built_by_the_parents_init():
    """Everything the parents' __init__ (mmseg's and mmdet's Mask2FormerHead) sets on a stock
    head - attributes, submodules, parameters, buffers - exists on ours too, so that a library
    upgrade adding one cannot leave it unset here (as when this head skipped the parents'
    __init__). Only the learned query features are dropped: the text gives them."""
    cfg = tiny_head_cfg()
    stock, ours = stock_mask2former_head(cfg), MODELS.build(cfg)
    names = set(vars(stock)) | set(stock._modules) | set(stock._parameters) | set(stock._buffers)
    assert 'query_feat' in names and 'assigner' in names  # the stock head is the full one
    assert sorted(n for n in names - {'query_feat'} if not hasattr(ours, n)) == []
    assert not hasattr(ours, 'query_feat')
    assert ours.assigner is None and ours.sampler is None  # identity assignment, no matcher
    # the parents' modules are kept as built: the same names and shapes (the pixel decoder
    # is the text-aware one), nothing extra but the text MLP and the text pixel decoder's
    theirs = {k: v.shape for k, v in stock.state_dict().items()
              if not k.startswith(('pixel_decoder.', 'query_feat.'))}
    mine = {k: v.shape for k, v in ours.state_dict().items()
            if not k.startswith(('pixel_decoder.', 'text_proj.'))}
    assert mine == theirs
    assert list(ours._modules).index('text_proj') == list(ours._modules).index('query_embed') - 1


def test_identity_assignment_gives_no_object_to_absent_classes():
    head = MODELS.build(tiny_head_cfg())
    label = torch.full((32, 32), 255, dtype=torch.long)
    label[:16] = 3
    label[16:, :10] = 1
    gt, metas = head._seg_data_to_instance_data([sample_with(label)])
    cls = torch.zeros(5, 6)
    labels, _, mask_targets, mask_weights, avg = head.get_targets(
        [cls], [torch.zeros(5, 32, 32)], gt, metas)
    assert labels[0].tolist() == [5, 1, 5, 3, 5]  # query k <- class k, else no-object (5)
    assert mask_weights[0].tolist() == [0, 1, 0, 1, 0]
    # targets are ordered like the positive queries: class 1 then class 3
    assert torch.equal(mask_targets[0][0].bool(), label == 1)
    assert torch.equal(mask_targets[0][1].bool(), label == 3)
    assert avg == 2


def test_out_of_range_label_is_a_clear_error():
    head = MODELS.build(tiny_head_cfg())
    label = torch.full((8, 8), 7, dtype=torch.long)
    gt, metas = head._seg_data_to_instance_data([sample_with(label)])
    with pytest.raises(ValueError, match='outside'):
        head.get_targets([torch.zeros(5, 6)], [torch.zeros(5, 8, 8)], gt, metas)


def test_loss_terms_and_deep_supervision():
    head = MODELS.build(tiny_head_cfg())
    head.init_weights()
    label = torch.randint(0, 5, (32, 32))
    label[:4] = 255
    losses = head.loss(feats_for(1), torch.randn(1, 5, 32), [sample_with(label)])
    assert {'loss_cls', 'loss_mask', 'loss_dice', 'd0.loss_cls', 'd2.loss_dice'} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    total = sum(losses.values())
    total.backward()
    assert head.text_proj[0].weight.grad is not None
    assert head.query_embed.weight.grad is not None
    assert head.pixel_decoder.text_proj.weight.grad is not None


def test_no_object_class_loss_matches_weighted_ce():
    """The classification loss is CE with weight 0.1 on the no-object class, averaged by
    the summed class weights (checked against an independent computation)."""
    head = MODELS.build(tiny_head_cfg())
    label = torch.zeros(8, 8, dtype=torch.long)  # only class 0 present
    gt, metas = head._seg_data_to_instance_data([sample_with(label)])
    cls = torch.randn(1, 5, 6)
    loss_cls, _, _ = head._loss_by_feat_single(cls, torch.randn(1, 5, 8, 8), gt, metas)
    target = torch.tensor([0, 5, 5, 5, 5])
    weight = torch.tensor([1.0] * 5 + [0.1])
    ce = torch.nn.functional.cross_entropy(cls[0], target, reduction='none') * weight[target]
    expected = 2.0 * ce.sum() / weight[target].sum()
    torch.testing.assert_close(loss_cls, expected)


def test_semantic_inference_is_probabilities_at_mask_resolution_then_resized():
    """As released: sum_q softmax(cls)[q, k] * sigmoid(mask[q]) at the mask resolution, then a
    bilinear resize - checked with explicit loops and a hand-written bilinear interpolation
    (align_corners=False), not with the formula the head uses."""
    cls = torch.randn(1, 3, 4, dtype=torch.float64)
    masks = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    out = MODELS.get('TextQueriedMask2FormerHead').semantic_inference(cls, masks, (4, 4))
    assert out.shape == (1, 3, 4, 4)
    probs = [[math.exp(v) for v in row] for row in cls[0].tolist()]
    probs = [[v / sum(row) for v in row] for row in probs]
    low = torch.zeros(3, 2, 2, dtype=torch.float64)
    for k in range(3):
        for q in range(3):
            low[k] += probs[q][k] / (1 + torch.exp(-masks[0, q]))

    def src(i, n_in, n_out):  # align_corners=False source coordinate, clamped at 0
        return max((i + 0.5) * n_in / n_out - 0.5, 0.0)
    expected = torch.zeros(3, 4, 4, dtype=torch.float64)
    for y in range(4):
        for x in range(4):
            sy, sx = src(y, 2, 4), src(x, 2, 4)
            y0, x0 = int(sy), int(sx)
            y1, x1 = min(y0 + 1, 1), min(x0 + 1, 1)
            wy, wx = sy - y0, sx - x0
            expected[:, y, x] = ((1 - wy) * (1 - wx) * low[:, y0, x0] + (1 - wy) * wx *
                                 low[:, y0, x1] + wy * (1 - wx) * low[:, y1, x0] +
                                 wy * wx * low[:, y1, x1])
    torch.testing.assert_close(out[0], expected)
    # not the other order (resize the mask logits first, then the sigmoid)
    other = torch.einsum('bqc,bqhw->bchw', cls.softmax(-1)[..., :-1],
                         torch.nn.functional.interpolate(masks, size=(4, 4), mode='bilinear',
                                                         align_corners=False).sigmoid())
    assert (other - out).abs().max() > 1e-4


def test_text_count_mismatch_is_an_error():
    head = MODELS.build(tiny_head_cfg())
    with pytest.raises(ValueError, match='text embeddings'):
        head(feats_for(1), torch.randn(1, 4, 32))


def test_portable_deform_attn_matches_pytorch_reference():
    from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttention

    from mfuser.models.heads import PortableMSDeformAttn
    torch.manual_seed(0)
    ref = MultiScaleDeformableAttention(embed_dims=16, num_heads=2, num_levels=2,
                                        num_points=2, batch_first=True)
    ours = PortableMSDeformAttn(embed_dims=16, num_heads=2, num_levels=2, num_points=2,
                                batch_first=True)
    ours.load_state_dict(ref.state_dict())
    ref.eval()
    ours.eval()  # both carry dropout 0.1
    shapes = torch.tensor([[4, 4], [2, 2]])
    start = torch.tensor([0, 16])
    value = torch.randn(2, 20, 16)
    query = torch.randn(2, 20, 16)
    refp = torch.rand(2, 20, 2, 2)
    kw = dict(query=query, value=value, reference_points=refp, spatial_shapes=shapes,
              level_start_index=start)
    torch.testing.assert_close(ours(**kw), ref(**kw))


def test_pixel_decoder_without_text_is_mmdets_own():
    """With the text inputs disabled (text=None, no post_norm) the adapted forward equals
    mmdet's MSDeformAttnPixelDecoder with the same weights."""
    from mmdet.models.layers.msdeformattn_pixel_decoder import MSDeformAttnPixelDecoder
    from mmengine.config import ConfigDict

    from mfuser.models.heads.text_pixel_decoder import TextMSDeformAttnPixelDecoder
    feat = 32
    layer = dict(self_attn_cfg=dict(embed_dims=feat, num_heads=4, num_levels=3, num_points=2,
                                    batch_first=True),
                 ffn_cfg=dict(embed_dims=feat, feedforward_channels=64, num_fcs=2,
                              act_cfg=dict(type='ReLU', inplace=True)))
    common = dict(in_channels=[16] * 4, strides=[4, 8, 16, 32], feat_channels=feat,
                  out_channels=feat, num_outs=3, norm_cfg=dict(type='GN', num_groups=8),
                  act_cfg=dict(type='ReLU'),
                  positional_encoding=dict(num_feats=feat // 2, normalize=True))
    theirs = MSDeformAttnPixelDecoder(encoder=ConfigDict(num_layers=2, layer_cfg=layer),
                                      **common).eval()
    theirs.init_weights()
    ours = TextMSDeformAttnPixelDecoder(
        text_dim=24, num_classes=5, encoder=dict(
            num_layers=2, post_norm=False,
            layer_cfg=dict(layer, text_cross_attn_cfg=dict(embed_dims=feat, num_heads=4))),
        **common).eval()
    state = {k.replace('.norms.1.', '.norms.2.'): v for k, v in theirs.state_dict().items()}
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not unexpected
    assert all('cross_attn' in k or '.norms.1.' in k or k.startswith('text_') for k in missing)
    feats = feats_for(2)
    with torch.no_grad():
        mask_ref, outs_ref = theirs(feats)
        mask, outs = ours(feats, None)
        torch.testing.assert_close(mask, mask_ref)
        for a, b in zip(outs, outs_ref):
            torch.testing.assert_close(a, b)
        # and the text does change the features when given
        assert not torch.allclose(ours(feats, torch.randn(2, 5, 24))[0], mask_ref)
