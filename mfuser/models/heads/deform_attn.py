"""Multi-scale deformable attention that runs wherever its inputs live.

mmcv's ``MultiScaleDeformableAttention`` calls its compiled CUDA kernel whenever CUDA is
available and the value is on the GPU, even when mmcv was built without CUDA ops (as
``tools/setup_env.sh`` builds it on CPU machines) and the kernel does not exist. This
subclass uses the compiled kernel only when mmcv really has it and otherwise falls back to
mmcv's pure-PyTorch ``multi_scale_deformable_attn_pytorch``; the kernel has no bfloat16
version, so bf16 inputs (bf16 AMP) go through it in float32. Parameters and numerics are
those of the parent class.

Adapted from mmcv 2.1 (Apache-2.0): ``MultiScaleDeformableAttention.forward``
(mmcv/ops/multi_scale_deform_attn.py), only the kernel choice changed; tests/test_head.py
compares it with mmcv's own module.
"""
from __future__ import annotations

import functools

import torch
from mmcv.ops.multi_scale_deform_attn import (
    MultiScaleDeformableAttention,
    MultiScaleDeformableAttnFunction,
    multi_scale_deformable_attn_pytorch,
)
from mmseg.registry import MODELS


@functools.cache
def mmcv_has_cuda_ops() -> bool:
    """Whether the installed mmcv was compiled with CUDA kernels."""
    try:
        from mmcv.ops import get_compiling_cuda_version
        return get_compiling_cuda_version() not in ('not available', '', None)
    except Exception:  # noqa: BLE001 - no compiled ops at all
        return False


def _compiled_deform_attn(value, spatial_shapes, level_start_index, locations, weights,
                          im2col_step):
    """mmcv's CUDA kernel, which dispatches float / double / half only (and casts locations and
    weights to the value's dtype): other dtypes (bfloat16 under bf16 autocast) are computed in
    float32 and the result cast back."""
    dtype = value.dtype
    if dtype in (torch.float16, torch.float32, torch.float64):
        return MultiScaleDeformableAttnFunction.apply(
            value, spatial_shapes, level_start_index, locations, weights, im2col_step)
    out = MultiScaleDeformableAttnFunction.apply(
        value.float(), spatial_shapes, level_start_index, locations.float(), weights.float(),
        im2col_step)
    return out.to(dtype)


@MODELS.register_module()
class PortableMSDeformAttn(MultiScaleDeformableAttention):
    """``MultiScaleDeformableAttention`` with a device-safe kernel choice.

    Shapes (batch_first=True): query (B, Nq, C), value (B, Nv, C),
    reference_points (B, Nq, L, 2), spatial_shapes (L, 2) -> (B, Nq, C).
    """

    def forward(self, query, key=None, value=None, identity=None, query_pos=None,
                key_padding_mask=None, reference_points=None, spatial_shapes=None,
                level_start_index=None, **kwargs):
        if value is None:
            value = query
        if identity is None:
            identity = query
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query = query.permute(1, 0, 2)
            value = value.permute(1, 0, 2)
        bs, num_query, _ = query.shape
        _, num_value, _ = value.shape
        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(bs, num_value, self.num_heads, -1)
        offsets = self.sampling_offsets(query).view(
            bs, num_query, self.num_heads, self.num_levels, self.num_points, 2)
        weights = self.attention_weights(query).view(
            bs, num_query, self.num_heads, self.num_levels * self.num_points)
        weights = weights.softmax(-1).view(
            bs, num_query, self.num_heads, self.num_levels, self.num_points)
        if reference_points.shape[-1] != 2:
            raise ValueError('PortableMSDeformAttn expects 2-d reference points, got '
                             f'last dim {reference_points.shape[-1]}')
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
        locations = (reference_points[:, :, None, :, None, :]
                     + offsets / normalizer[None, None, None, :, None, :])
        if value.is_cuda and mmcv_has_cuda_ops():
            output = _compiled_deform_attn(value, spatial_shapes, level_start_index, locations,
                                           weights, self.im2col_step)
        else:
            output = multi_scale_deformable_attn_pytorch(value, spatial_shapes, locations,
                                                         weights)
        output = self.output_proj(output)
        if not self.batch_first:
            output = output.permute(1, 0, 2)
        return self.dropout(output) + identity
