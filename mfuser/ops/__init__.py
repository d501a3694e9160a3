"""Numerical operators: the selective scan (Mamba S6) with CPU/CUDA backends."""
from .selective_scan import (  # noqa: F401
    BACKENDS,
    active_backend,
    available_backends,
    build_cpu_extension,
    cuda_backend_status,
    describe_cuda_choice,
    log_backend_choice,
    selective_scan_fn,
    selective_scan_ref,
)

__all__ = ['BACKENDS', 'active_backend', 'available_backends', 'build_cpu_extension',
           'cuda_backend_status', 'describe_cuda_choice', 'log_backend_choice',
           'selective_scan_fn', 'selective_scan_ref']
