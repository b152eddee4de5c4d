"""Gated LayerNorm / RMSNorm with the call signature of ``mamba_ssm.ops.triton.layernorm_gated``.

``rmsnorm_fn`` is what Nemotron-H and every Mamba2 mixer call on each forward (``MambaRMSNormGated``):
``y = norm(x) * silu(z)`` (``norm_before_gate=True``) or ``y = norm(x * silu(z))``, normalised over groups
of ``group_size`` channels. Forward only; computed in float32, returned in ``x.dtype``.
"""
from __future__ import annotations

import torch

from . import _forward_only, _runtime
from . import _validate as check


def _check(
    fn: str,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    z: torch.Tensor | None,
    eps: float,
    group_size: int | None,
) -> int:
    """Validate the arguments; return the group size."""
    check.tensor(fn, "x", x)
    check.tensor(fn, "weight", weight)
    check.tensor(fn, "bias", bias, optional=True)
    check.tensor(fn, "z", z, optional=True)
    if x.dim() < 1 or x.shape[-1] == 0:
        raise check.fail(fn, f"x must have a non-empty last (feature) dimension, got shape {tuple(x.shape)}")
    n = x.shape[-1]
    check.dtype(fn, "x", x)
    check.dtype(fn, "weight", weight)
    check.shape(fn, "weight", weight, (n,), "(hidden,)")
    if bias is not None:
        check.dtype(fn, "bias", bias)
        check.shape(fn, "bias", bias, (n,), "(hidden,)")
    if z is not None:
        check.dtype(fn, "z", z)
        check.shape(fn, "z", z, tuple(x.shape), "x.shape")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise check.fail(fn, f"eps must be a non-negative number, got {eps!r}")
    if group_size is None:
        group_size = n
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0 or n % group_size:
        raise check.fail(
            fn, f"group_size must be a positive divisor of the hidden size {n} (or None), got {group_size!r}"
        )
    max_group = 65536 // x.element_size()
    if group_size > max_group:
        raise check.fail(
            fn,
            f"group_size {group_size} is too large: a group must fit in 64 KB ({max_group} {x.dtype} "
            "elements), the same limit as mamba_ssm's kernel; use a smaller group_size",
        )
    check.device(fn, {"x": x, "weight": weight, "bias": bias, "z": z})
    return group_size


def layernorm_fn(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    z: torch.Tensor | None = None,
    eps: float = 1e-6,
    group_size: int | None = None,
    norm_before_gate: bool = True,
    is_rms_norm: bool = False,
) -> torch.Tensor:
    """LayerNorm (or RMSNorm with ``is_rms_norm``) over groups, optionally gated by ``silu(z)``.

    If ``z`` is given: ``norm(x) * silu(z)`` when ``norm_before_gate`` else ``norm(x * silu(z))``.
    """
    fn = "rmsnorm_fn" if is_rms_norm else "layernorm_fn"
    group_size = _check(fn, x, weight, bias, z, eps, group_size)
    if x.device.type == "meta" or x.numel() == 0:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)

    def launch() -> torch.Tensor:
        launcher = _runtime.load_launcher("_layernorm_gated_triton")
        return launcher.layer_norm_fwd(
            x, weight, bias, z, float(eps), group_size, bool(norm_before_gate), bool(is_rms_norm)
        )

    return _forward_only.run(fn, launch, (x, weight, bias, z))


def rmsnorm_fn(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    z: torch.Tensor | None = None,
    eps: float = 1e-6,
    group_size: int | None = None,
    norm_before_gate: bool = True,
) -> torch.Tensor:
    """RMSNorm over groups, optionally gated by ``silu(z)``; see :func:`layernorm_fn`."""
    return layernorm_fn(x, weight, bias, z, eps, group_size, norm_before_gate, True)
