"""MVFuser: the Mamba co-adapter that fuses VFM and VLM tokens (MFuser, spec section 2).

Parameter names follow the released checkpoints (``adapter.N.in_proj``, ``conv1d_x``,
``conv1d_z``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``norm``, ``out_proj``, ``scale``), so
released adapters load by name.

Adapter convention (shared with :mod:`mfuser.models.adapters`): ``adapter(x, n_first=None)``
takes tokens (B, L, C) and returns the adapter OUTPUT (B, L, C); the caller adds the residual.
``n_first`` (the length of the first stream in a concatenated sequence) is accepted and ignored.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmseg.registry import MODELS

from mfuser.ops import log_backend_choice, selective_scan_fn

__all__ = ['GatedRMSNorm', 'MVFuser']


def _at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


class GatedRMSNorm(nn.Module):
    """RMSNorm with a SiLU gate, normalise-then-gate: ``y / rms(y) * weight * silu(z)``.

    Pure PyTorch (mamba-ssm's ``RMSNormGated`` with ``norm_before_gate=True`` needs Triton).
    Computed in float32 (or float64), returned in the input dtype.
    Shapes: y, z (..., C) -> (..., C).
    """

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        dtype = y.dtype
        y32 = _at_least_fp32(y)
        out = y32 * torch.rsqrt(y32.square().mean(-1, keepdim=True) + self.eps)
        out = out * _at_least_fp32(self.weight)
        if z is not None:
            out = out * F.silu(_at_least_fp32(z))
        return out.to(dtype)

    def extra_repr(self) -> str:
        return f'{self.weight.numel()}, eps={self.eps}'


@MODELS.register_module()
class MVFuser(nn.Module):
    """Mamba co-adapter over a token sequence: (B, L, d_model) -> (B, L, d_model).

    d_inner = expand * d_model is split in two halves of h = d_inner / 2 channels: ``x`` goes
    through a depthwise conv ("same" padding, sees both neighbours), SiLU and the selective
    scan; ``z`` through its own depthwise conv and SiLU, then gates the RMS-normalised scan
    output. The result is projected back, dropped out and multiplied by the learnable scalar
    ``scale`` (init ``init_scale``), so a new adapter starts close to zero output.

    Args:
        d_model: token width C.
        d_state: SSM state size N.
        d_conv: depthwise conv kernel size.
        expand: d_inner = expand * d_model.
        dt_rank: rank of the delta projection; 'auto' = ceil(d_model / 16).
        dt_min, dt_max, dt_init_floor: initial delta range (log-uniform), as in Mamba.
        proj_drop: dropout after ``out_proj``.
        init_scale: initial value of ``scale``.
        double_dt_bias: apply ``dt_proj`` with its bias AND pass the bias again as the scan's
            ``delta_bias`` (the reference implementation's behaviour, needed to reproduce a
            released checkpoint). False gives standard Mamba (bias added once).
        scan_backend: selective-scan backend (None = automatic, see :mod:`mfuser.ops`).
    """

    def __init__(self,
                 d_model: int,
                 d_state: int = 16,
                 d_conv: int = 3,
                 expand: int = 1,
                 dt_rank: int | str = 'auto',
                 dt_min: float = 1e-3,
                 dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4,
                 proj_drop: float = 0.1,
                 init_scale: float = 1e-3,
                 double_dt_bias: bool = True,
                 norm_eps: float = 1e-5,
                 scan_backend: str | None = None):
        super().__init__()
        d_inner = int(expand * d_model)
        if d_inner % 2:
            raise ValueError(f'expand * d_model must be even to split x/z, got {d_inner}')
        h = d_inner // 2
        self.d_model, self.d_state, self.d_inner, self.d_half = d_model, d_state, d_inner, h
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == 'auto' else int(dt_rank)
        self.double_dt_bias = double_dt_bias
        self.scan_backend = scan_backend
        if scan_backend in (None, 'auto'):
            log_backend_choice()  # once per process: which scan runs where, and why

        self.in_proj = nn.Linear(d_model, d_inner, bias=False)
        self.conv1d_x = nn.Conv1d(h, h, d_conv, groups=h, padding='same', bias=False)
        self.conv1d_z = nn.Conv1d(h, h, d_conv, groups=h, padding='same', bias=False)
        self.x_proj = nn.Linear(h, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, h, bias=True)
        self.A_log = nn.Parameter(torch.empty(h, d_state))
        self.D = nn.Parameter(torch.empty(h))
        self.norm = GatedRMSNorm(h, eps=norm_eps)
        self.out_proj = nn.Linear(h, d_model, bias=False)
        self.proj_drop = nn.Dropout(proj_drop)
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))
        self._dt_init = (dt_min, dt_max, dt_init_floor)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self):
        """Mamba's S4D-real / delta initialisation of ``dt_proj``, ``A_log`` and ``D``."""
        dt_min, dt_max, floor = self._dt_init
        std = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        u = torch.rand(self.d_half)
        dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.dt_proj.bias._no_reinit = True
        a = torch.arange(1, self.d_state + 1, dtype=torch.float32)
        self.A_log.copy_(torch.log(a).expand(self.d_half, -1))
        self.D.fill_(1.0)
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True

    def forward(self, x: torch.Tensor, n_first: int | None = None) -> torch.Tensor:
        """x: (B, L, d_model) -> adapter output (B, L, d_model) (residual not added)."""
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f'MVFuser expects (B, L, {self.d_model}) tokens, got '
                             f'{tuple(x.shape)}')
        xz = self.in_proj(x).transpose(1, 2)                         # (B, d_inner, L)
        xs, z = xz.chunk(2, dim=1)                                   # (B, h, L) each
        xs = F.silu(self.conv1d_x(xs))
        z = F.silu(self.conv1d_z(z))
        x_dbl = self.x_proj(xs.transpose(1, 2))                      # (B, L, R + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        if self.double_dt_bias:
            dt = self.dt_proj(dt)
        else:
            dt = F.linear(dt, self.dt_proj.weight)
        dt = dt.transpose(1, 2)                                      # (B, h, L)
        B = B.transpose(1, 2).contiguous()                           # (B, N, L)
        C = C.transpose(1, 2).contiguous()
        A = -torch.exp(_at_least_fp32(self.A_log))
        y = selective_scan_fn(xs, dt.contiguous(), A, B, C, _at_least_fp32(self.D), z=None,
                              delta_bias=_at_least_fp32(self.dt_proj.bias), delta_softplus=True,
                              backend=self.scan_backend)              # (B, h, L)
        y = self.norm(y.transpose(1, 2), z.transpose(1, 2))          # (B, L, h)
        return self.proj_drop(self.out_proj(y)) * self.scale

    def no_weight_decay(self) -> set[str]:
        return {'A_log', 'D'}

    def extra_repr(self) -> str:
        return (f'd_model={self.d_model}, d_state={self.d_state}, d_inner={self.d_inner}, '
                f'dt_rank={self.dt_rank}, double_dt_bias={self.double_dt_bias}')
