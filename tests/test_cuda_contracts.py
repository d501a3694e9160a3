"""What the CUDA kernels require, checked without a GPU.

torch builds fake CUDA tensors on a CPU-only machine (``FakeTensorMode``: shapes, dtypes and
strides, no values), and ``torch.set_autocast_enabled('cuda', True)`` applies CUDA's real
autocast rules to them (which differ from the CPU's: exp, softplus and layer_norm run in float32
on CUDA). The tiny MFuser runs its loss and predict paths on such tensors in fp32, fp16 and
bf16 autocast, with stand-ins for the two compiled kernels it calls that check what the kernels
check:

* mamba-ssm's ``selective_scan_cuda.fwd`` (csrc/selective_scan/selective_scan.cpp, v2.3.2.post1
  and main): u, delta, B, C of one dtype in {f32, f16, bf16}; A, D and delta_bias float32;
  last dimension contiguous; N <= 256;
* mmcv 2.1's ``ext_module.ms_deform_attn_forward`` (ms_deform_attn_cuda.cu): dispatches
  float / double / half only, contiguous inputs, int64 shapes and level starts (mmcv's Python
  ``MultiScaleDeformableAttnFunction`` in front of it casts locations and weights to the value's
  dtype, as it really does).
"""
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from tiny_models import tiny_mfuser_cfg
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from mfuser.models.heads import deform_attn
from mfuser.models.mvfuser import MVFuser
from mfuser.ops import selective_scan as ss

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class ScanKernelStandIn:
    """mamba-ssm's selective_scan_fn, checking what its C++ checks; returns empty outputs."""

    def __init__(self):
        self.calls = []

    def __call__(self, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                 delta_softplus=False, return_last_state=False):
        assert u.is_cuda and u.dtype in KERNEL_DTYPES, u.dtype
        assert delta.dtype == u.dtype, (delta.dtype, u.dtype)
        assert A.dtype == torch.float32, A.dtype
        assert B.dtype == u.dtype and C.dtype == u.dtype, (B.dtype, C.dtype, u.dtype)
        for t in (D, delta_bias):
            assert t is None or t.dtype == torch.float32, t.dtype
        assert z is None or z.dtype == u.dtype
        for t in (u, delta, B, C):
            # mamba's Python wrapper fixes a non-contiguous last dim with a copy; the kernel
            # itself asserts it. A copy per call would go unnoticed, so demand it here.
            assert t.stride(-1) == 1, t.stride()
        assert A.shape[1] <= 256
        self.calls.append(u.dtype)
        out = torch.empty_like(u)
        if return_last_state:
            return out, u.new_empty(u.shape[0], u.shape[1], A.shape[1], dtype=torch.float32)
        return out


class DeformAttnKernelStandIn:
    """mmcv's compiled ``ms_deform_attn_forward``: float / double / half only."""

    def __init__(self):
        self.calls = []

    def ms_deform_attn_forward(self, value, spatial_shapes, level_start_index, sampling_loc,
                               attn_weight, im2col_step):
        if value.dtype not in (torch.float32, torch.float64, torch.float16):
            name = str(value.dtype).split('.')[-1].replace('bfloat16', 'BFloat16')
            raise RuntimeError(f'"ms_deform_attn_forward_cuda" not implemented for {name!r}')
        for t in (value, spatial_shapes, level_start_index, sampling_loc, attn_weight):
            assert t.is_cuda and t.is_contiguous()
        assert spatial_shapes.dtype == level_start_index.dtype == torch.int64
        assert sampling_loc.dtype == attn_weight.dtype == value.dtype
        self.calls.append(value.dtype)
        b, _, heads, ch = value.shape
        return value.new_empty(b, sampling_loc.shape[1], heads * ch)


@pytest.fixture
def kernels(monkeypatch):
    """Both stand-ins in place; the scan forced to "mamba_ssm"."""
    import mmcv.ops.multi_scale_deform_attn as mmcv_msda
    scan, msda = ScanKernelStandIn(), DeformAttnKernelStandIn()
    monkeypatch.setattr(ss, '_mamba_fn', scan)
    monkeypatch.setattr(ss, '_mamba_error', None)
    monkeypatch.setattr(ss, '_probe_results', {'mamba_ssm': None})
    monkeypatch.setenv(ss.ENV_VAR, 'mamba_ssm')
    monkeypatch.setattr(mmcv_msda, 'ext_module', msda)
    monkeypatch.setattr(deform_attn, 'mmcv_has_cuda_ops', lambda: True)
    # Turning the label map into per-class masks (torch.unique) and mmdet's mask losses
    # (boolean-mask indexing, point sampling by uncertainty) depend on values, which fake
    # tensors have none of; they are not kernel contracts. Every class is taken as present and
    # the head's losses are replaced by a value-free sum over every prediction.
    from mmseg.models.decode_heads.mask2former_head import Mask2FormerHead

    from mfuser.models.heads.text_mask2former_head import TextQueriedMask2FormerHead
    monkeypatch.setattr(Mask2FormerHead, '_seg_data_to_instance_data', _all_classes_present)
    monkeypatch.setattr(TextQueriedMask2FormerHead, 'loss_by_feat', _losses_standin)
    return scan, msda


def _losses_standin(self, cls_preds, mask_preds, batch_gt_instances, batch_img_metas):
    return {'loss_cls': sum(c.float().mean() for c in cls_preds),
            'loss_mask': sum(m.float().sigmoid().mean() for m in mask_preds)}


def _all_classes_present(self, batch_data_samples):
    from mmengine.structures import InstanceData
    instances, metas = [], []
    for sample in batch_data_samples:
        seg = sample.gt_sem_seg.data
        labels = torch.arange(self.num_classes, device=seg.device)
        masks = (seg == labels[:, None, None]).long()
        instances.append(InstanceData(labels=labels, masks=masks))
        metas.append(sample.metainfo)
    return instances, metas


def _batch(n=2, size=56, classes=5):
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8, device='cuda')
              for _ in range(n)]
    samples = []
    for _ in range(n):
        s = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                        pad_shape=(size, size)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, classes, (1, size, size),
                                                    device='cuda'))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def _run_on_fake_cuda(mode, dtype):
    """Build the tiny model, move it to fake CUDA, run ``mode`` under CUDA autocast."""
    torch.manual_seed(0)
    model = MODELS.build(tiny_mfuser_cfg())
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with fake:
        model = model.cuda()
        data = _batch()
        autocast = dtype is not None
        if autocast:
            torch.set_autocast_enabled('cuda', True)
            torch.set_autocast_dtype('cuda', dtype)
        try:
            if mode == 'loss':
                model.train()
                batch = model.data_preprocessor(data, True)
                losses = model(**batch, mode='loss')
                return model, {k: v for k, v in losses.items() if 'loss' in k}
            model.eval()
            with torch.no_grad():
                batch = model.data_preprocessor(data, False)
                return model, model(**batch, mode='predict')
        finally:
            if autocast:
                torch.set_autocast_enabled('cuda', False)


@pytest.mark.parametrize('mode', ['loss', 'predict'])
@pytest.mark.parametrize('dtype', [None, torch.float16, torch.bfloat16],
                         ids=['fp32', 'fp16-autocast', 'bf16-autocast'])
def test_tiny_mfuser_meets_the_cuda_kernel_contracts(kernels, mode, dtype):
    scan, msda = kernels
    model, out = _run_on_fake_cuda(mode, dtype)
    # every MVFuser (one per encoder block pair, one per MTEnhancer layer) went through the
    # kernel in the autocast dtype; the deformable attention got a dtype its kernel has
    expect = dtype or torch.float32
    n_fusers = sum(isinstance(m, MVFuser) for m in model.modules())
    assert n_fusers >= 3 and scan.calls == [expect] * n_fusers, scan.calls
    assert msda.calls and set(msda.calls) <= {torch.float32, torch.float16}, msda.calls
    if mode == 'loss':
        assert out and all(v.is_cuda for v in out.values())
        assert all(v.dtype == torch.float32 for v in out.values()), \
            {k: v.dtype for k, v in out.items()}
    else:
        assert len(out) == 2 and out[0].pred_sem_seg.data.shape[-2:] == (56, 56)


class _DtypeLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        self.ops += [(str(func), o.dtype) for o in outs if isinstance(o, torch.Tensor)]
        return out


@pytest.mark.parametrize('backend', ['chunked', 'reference'])
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_pytorch_scans_stay_float32_under_cuda_autocast(backend, dtype):
    """Under CUDA autocast the chunked scan's einsum would become an fp16/bf16 bmm (~1e-3
    error in y and gradients); it must compute in float32 and only cast the result."""
    with FakeTensorMode():
        u, delta, z = (torch.randn(2, 8, 40, device='cuda', dtype=dtype) for _ in range(3))
        B, C = (torch.randn(2, 4, 40, device='cuda', dtype=dtype) for _ in range(2))
        A = -torch.rand(8, 4, device='cuda')
        torch.set_autocast_enabled('cuda', True)
        torch.set_autocast_dtype('cuda', dtype)
        try:
            with _DtypeLog() as log:
                y = ss.selective_scan_fn(u, delta, A, B, C, z=z, delta_softplus=True,
                                         backend=backend)
        finally:
            torch.set_autocast_enabled('cuda', False)
    assert y.dtype == dtype
    matmuls = [d for op, d in log.ops if any(k in op for k in ('bmm', 'mm.', 'einsum'))]
    assert matmuls or backend == 'reference'
    low = [op for op, d in log.ops if d == dtype and '_to_copy' not in op]
    assert not low, f'ops computed in {dtype}: {sorted(set(low))}'


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_chunked_scan_is_float32_under_cpu_autocast_too(dtype):
    """Real values on the CPU: inside autocast the chunked scan equals its float32 result."""
    g = torch.Generator().manual_seed(0)
    u, delta = torch.randn(2, 8, 50, generator=g), torch.randn(2, 8, 50, generator=g)
    B, C = torch.randn(2, 4, 50, generator=g), torch.randn(2, 4, 50, generator=g)
    A = -torch.rand(8, 4, generator=g) - 0.1
    ref = ss.selective_scan_fn(u, delta, A, B, C, delta_softplus=True, backend='chunked')
    with torch.autocast('cpu', dtype=dtype):
        y = ss.selective_scan_fn(u, delta, A, B, C, delta_softplus=True, backend='chunked')
    torch.testing.assert_close(y, ref, rtol=0, atol=0)


def test_bf16_value_goes_through_the_mmcv_kernel_in_float32(kernels):
    """bf16 AMP: mmcv's kernel has no bf16 version; the module computes it in float32 and
    returns bf16."""
    _, msda = kernels
    attn = MODELS.build(dict(type='PortableMSDeformAttn', embed_dims=32, num_heads=4,
                             num_levels=1, num_points=2, batch_first=True))
    attn = attn.to(torch.bfloat16)
    with FakeTensorMode(allow_non_fake_inputs=True):
        attn = attn.cuda()
        q = torch.randn(1, 16, 32, device='cuda', dtype=torch.bfloat16)
        ref = torch.rand(1, 16, 1, 2, device='cuda', dtype=torch.bfloat16)
        shapes = torch.tensor([[4, 4]], device='cuda')
        out = attn(q, reference_points=ref, spatial_shapes=shapes,
                   level_start_index=torch.zeros(1, dtype=torch.long, device='cuda'))
    assert out.dtype == torch.bfloat16 and msda.calls == [torch.float32]
