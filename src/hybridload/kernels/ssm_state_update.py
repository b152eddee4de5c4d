"""One Mamba/Mamba2 decode step, with the call signature of
``mamba_ssm.ops.triton.selective_state_update.selective_state_update``.

Per head h, channel p and state index n (heads share B/C within a group):
``dt' = softplus(dt + dt_bias)`` (if asked), ``state = state * exp(A * dt') + dt' * B * x`` (in place),
``out = sum_n state * C + D * x``, then ``out *= silu(z)``. Forward only; float32 math, ``state`` keeps
its dtype, ``out`` has ``x.dtype``.
"""
from __future__ import annotations

import torch

from . import _forward_only, _runtime
from . import _validate as check

_FN = "selective_state_update"


#: argument -> (rank with the heads/groups axis, where that axis goes, shape with it, shape without it)
_FORMS: dict[str, tuple[int, int, str, str]] = {
    "x": (3, 1, "(batch, nheads, dim)", "(batch, dim)"),
    "dt": (3, 1, "(batch, nheads, dim)", "(batch, dim)"),
    "A": (3, 0, "(nheads, dim, dstate)", "(dim, dstate)"),
    "B": (3, 1, "(batch, ngroups, dstate)", "(batch, dstate)"),
    "C": (3, 1, "(batch, ngroups, dstate)", "(batch, dstate)"),
    "D": (2, 0, "(nheads, dim)", "(dim,)"),
    "z": (3, 1, "(batch, nheads, dim)", "(batch, dim)"),
    "dt_bias": (2, 0, "(nheads, dim)", "(dim,)"),
}


def _as_heads(values: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor | None]:
    """Add the heads axis to arguments given in the single-head (Mamba1) form, as mamba_ssm does."""
    for name, value in values.items():
        if value is None:
            continue
        rank, axis, with_heads, without = _FORMS[name]
        if value.dim() == rank - 1:
            values[name] = value.unsqueeze(axis)
        elif value.dim() != rank:
            check.ndim(_FN, name, value, (rank - 1, rank), f"{with_heads} or {without}")
    return values


def selective_state_update(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    state_batch_indices: torch.Tensor | None = None,
) -> torch.Tensor:
    """Advance ``state`` by one token and return the output.

    state: (batch, nheads, dim, dstate) or (batch, dim, dstate); x, dt, z: (batch, nheads, dim);
    A: (nheads, dim, dstate); B, C: (batch, ngroups, dstate) with nheads % ngroups == 0;
    D, dt_bias: (nheads, dim); every argument may also come without its heads/groups axis.
    state_batch_indices: (batch,) int32/int64, row b uses ``state[state_batch_indices[b]]``; a negative
    index marks padding (output 0, state untouched).
    """
    for name, value in (("state", state), ("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C)):
        check.tensor(_FN, name, value)
    for name, value in (("D", D), ("z", z), ("dt_bias", dt_bias), ("state_batch_indices", state_batch_indices)):
        check.tensor(_FN, name, value, optional=True)
    check.ndim(_FN, "state", state, (3, 4), "(batch, dim, dstate) or (batch, nheads, dim, dstate)")
    heads = state.dim() == 4
    state4 = state if heads else state.unsqueeze(1)
    v = _as_heads(dict(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias))
    _, nheads, dim, dstate = state4.shape
    batch = v["x"].shape[0]
    check.shape(_FN, "x", v["x"], (batch, nheads, dim), "(batch, nheads, dim)")
    check.shape(_FN, "dt", v["dt"], (batch, nheads, dim), "(batch, nheads, dim)")
    check.shape(_FN, "A", v["A"], (nheads, dim, dstate), "(nheads, dim, dstate)")
    ngroups = v["B"].shape[1]
    if ngroups == 0 or nheads % ngroups:
        raise check.fail(_FN, f"nheads ({nheads}) must be divisible by ngroups (B.shape[1] = {ngroups})")
    check.shape(_FN, "B", v["B"], (batch, ngroups, dstate), "(batch, ngroups, dstate)")
    check.shape(_FN, "C", v["C"], (batch, ngroups, dstate), "(batch, ngroups, dstate)")
    if D is not None:
        check.shape(_FN, "D", v["D"], (nheads, dim), "(nheads, dim)")
    if z is not None:
        check.shape(_FN, "z", v["z"], (batch, nheads, dim), "(batch, nheads, dim)")
    if dt_bias is not None:
        check.shape(_FN, "dt_bias", v["dt_bias"], (nheads, dim), "(nheads, dim)")
    if state_batch_indices is None:
        if state4.shape[0] != batch:
            raise check.fail(
                _FN, f"state has {state4.shape[0]} rows but x has batch {batch}; pass state_batch_indices "
                "to select rows of a larger state cache"
            )
    else:
        check.dtype(_FN, "state_batch_indices", state_batch_indices, (torch.int32, torch.int64))
        check.shape(_FN, "state_batch_indices", state_batch_indices, (batch,), "(batch,)")
    for name in ("x", "dt", "A", "B", "C", "D", "z", "dt_bias"):
        if v[name] is not None:
            check.dtype(_FN, name, v[name])
    check.dtype(_FN, "state", state)
    check.device(_FN, {"state": state, **v, "state_batch_indices": state_batch_indices})

    if state.device.type == "meta" or v["x"].numel() == 0:
        return torch.empty_like(x)

    def launch() -> torch.Tensor:
        launcher = _runtime.load_launcher("_ssm_state_update_triton")
        out = launcher.selective_state_update(
            state4, v["x"], v["dt"], v["A"], v["B"], v["C"], v["D"], v["z"], v["dt_bias"],
            bool(dt_softplus), state_batch_indices,
        )
        return out if heads else out.squeeze(1)

    return _forward_only.run(_FN, launch, (x, dt, A, B, C, D, z, dt_bias))
