"""Pure-PyTorch reference implementations of kernel functions, keyed by every symbol path remote code imports.

A stand-in called with only meta/fake tensors runs the reference registered for the path it was imported
under (``hybridload.substitutes.reference_for``), so shapes and dtypes flow through a meta build or
``scan()``. The table below maps each reference function to all the paths real code reaches it by: the
defining module, the package's re-exports, and aliases older releases used.

One module per kernel package: :mod:`.fla`, :mod:`.flash_attn`, :mod:`.mamba_ssm`, :mod:`.causal_conv1d`.
A module that is missing or fails to import is left out of :data:`DEFAULT_REFERENCES` as a whole and listed
in :data:`UNAVAILABLE` with the reason (tests assert that list is empty), never half-registered.
"""
from __future__ import annotations

import importlib
from typing import Callable

#: reference module (relative to this package) -> function name -> symbol paths it serves
REFERENCE_TABLE: dict[str, dict[str, tuple[str, ...]]] = {
    "fla": {
        "chunk_kda": ("fla.ops.kda.chunk_kda", "fla.ops.kda.chunk.chunk_kda", "fla.ops.chunk_kda"),
        "fused_recurrent_kda": (
            "fla.ops.kda.fused_recurrent_kda",
            "fla.ops.kda.fused_recurrent.fused_recurrent_kda",
            "fla.ops.fused_recurrent_kda",
        ),
        "fused_kda_gate": ("fla.ops.kda.gate.fused_kda_gate",),
        "causal_conv1d": (
            "fla.modules.causal_conv1d.causal_conv1d",
            "fla.modules.causal_conv1d.ops.causal_conv1d",
            "fla.modules.convolution.causal_conv1d",
            "fla.modules.conv.causal_conv1d",
        ),
        "causal_conv1d_update": (
            "fla.modules.causal_conv1d.causal_conv1d_update",
            "fla.modules.causal_conv1d.ops.causal_conv1d_update",
            "fla.modules.convolution.causal_conv1d_update",
        ),
        "rms_norm_gated": (
            "fla.modules.norm.fused_norm_gate.rms_norm_gated",
            "fla.modules.fused_norm_gate.rms_norm_gated",
        ),
        "layer_norm_gated": (
            "fla.modules.norm.fused_norm_gate.layer_norm_gated",
            "fla.modules.fused_norm_gate.layer_norm_gated",
        ),
        "rms_norm": ("fla.modules.norm.layernorm.rms_norm", "fla.modules.layernorm.rms_norm"),
        "layer_norm": ("fla.modules.norm.layernorm.layer_norm", "fla.modules.layernorm.layer_norm"),
    },
    "flash_attn": {
        **{
            name: (f"flash_attn.{name}", f"flash_attn.flash_attn_interface.{name}")
            for name in (
                "flash_attn_func",
                "flash_attn_varlen_func",
                "flash_attn_qkvpacked_func",
                "flash_attn_kvpacked_func",
                "flash_attn_varlen_qkvpacked_func",
                "flash_attn_varlen_kvpacked_func",
            )
        },
        "apply_rotary_emb": ("flash_attn.layers.rotary.apply_rotary_emb",),
        "apply_rotary_emb_func": ("flash_attn.layers.rotary.apply_rotary_emb_func",),
        "apply_rotary_emb_qkv_": ("flash_attn.layers.rotary.apply_rotary_emb_qkv_",),
        "apply_rotary_emb_kv_": ("flash_attn.layers.rotary.apply_rotary_emb_kv_",),
        "rms_norm": ("flash_attn.ops.rms_norm.rms_norm",),
    },
    "mamba_ssm": {
        "rmsnorm_fn": ("mamba_ssm.ops.triton.layernorm_gated.rmsnorm_fn",),
        "layernorm_fn": ("mamba_ssm.ops.triton.layernorm_gated.layernorm_fn",),
        "selective_state_update": ("mamba_ssm.ops.triton.selective_state_update.selective_state_update",),
        "mamba_chunk_scan_combined": ("mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined",),
        "mamba_split_conv1d_scan_combined": (
            "mamba_ssm.ops.triton.ssd_combined.mamba_split_conv1d_scan_combined",
        ),
        "selective_scan_fn": ("mamba_ssm.ops.selective_scan_interface.selective_scan_fn", "mamba_ssm.selective_scan_fn"),
        "mamba_inner_fn": ("mamba_ssm.ops.selective_scan_interface.mamba_inner_fn", "mamba_ssm.mamba_inner_fn"),
    },
    "causal_conv1d": {
        "causal_conv1d_fn": ("causal_conv1d.causal_conv1d_fn", "causal_conv1d.causal_conv1d_interface.causal_conv1d_fn"),
        "causal_conv1d_update": (
            "causal_conv1d.causal_conv1d_update",
            "causal_conv1d.causal_conv1d_interface.causal_conv1d_update",
        ),
    },
}

#: ``"module.function"`` -> why it is not registered (module not importable, function missing)
UNAVAILABLE: dict[str, str] = {}


def _build() -> dict[str, Callable]:
    references: dict[str, Callable] = {}
    for module_name, functions in REFERENCE_TABLE.items():
        qualified = f"{__name__}.{module_name}"
        try:
            module = importlib.import_module(qualified)
        except Exception as exc:  # a missing or broken reference module must not take the others down
            reason = (
                f"{qualified} is not installed"
                if isinstance(exc, ModuleNotFoundError) and exc.name == qualified
                else f"importing {qualified} failed: {exc!r}"
            )
            for fn_name in functions:
                UNAVAILABLE[f"{module_name}.{fn_name}"] = reason
            continue
        for fn_name, paths in functions.items():
            fn = getattr(module, fn_name, None)
            if not callable(fn):
                UNAVAILABLE[f"{module_name}.{fn_name}"] = f"{qualified} defines no function {fn_name!r}"
                continue
            for path in paths:
                references[path] = fn
        # a module may name further import paths itself (e.g. the bare ``causal_conv1d_cuda`` extension)
        for path, fn in getattr(module, "REFERENCES", {}).items():
            references.setdefault(path, fn)
    return references


#: symbol path (as user code imports it) -> pure-torch reference
DEFAULT_REFERENCES: dict[str, Callable] = _build()

__all__ = ["DEFAULT_REFERENCES", "REFERENCE_TABLE", "UNAVAILABLE"]
