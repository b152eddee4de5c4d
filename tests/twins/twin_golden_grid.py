"""The constructor-argument grid every twin is checked on, per package and real class.

Shared by the golden recorders (``record_twin_goldens.py`` on CPU from the packages' own sources,
``gpu_twins_check.py`` on the GPU from the fla wheels) and by the CPU tests. A case is the keyword arguments
plus the default device the constructor runs under (``None``: torch's default, CPU; ``"meta"``: inside
``with torch.device("meta")``, which is how accelerate's ``init_empty_weights``-style builds look to a
constructor). Arguments are encoded with :func:`hybridload.twins.structure.encode` when written out.
"""
from __future__ import annotations

import torch

META = "meta"
bf16, fp16 = torch.bfloat16, torch.float16

#: package -> (distribution name, real class path -> [(kwargs, default_device)])
GRID: dict[str, tuple[str, dict[str, list[tuple[dict, str | None]]]]] = {
    "fla": (
        "fla-core",
        {
            "fla.modules.causal_conv1d.ops.ShortConvolution": [
                ({"hidden_size": 64, "kernel_size": 4}, None),
                ({"hidden_size": 48, "kernel_size": 3, "bias": True, "activation": None}, None),
                ({"hidden_size": 32, "kernel_size": 4, "activation": "swish", "device": "meta", "dtype": bf16}, None),
                ({"hidden_size": 16, "kernel_size": 2}, META),
            ],
            "fla.modules.norm.fused_norm_gate.FusedRMSNormGated": [
                ({"hidden_size": 64}, None),
                ({"hidden_size": 32, "elementwise_affine": False, "eps": 1e-6, "activation": "sigmoid"}, None),
                ({"hidden_size": 16, "activation": "silu", "device": "meta", "dtype": bf16}, None),
                ({"hidden_size": 24}, META),
            ],
            "fla.modules.norm.fused_norm_gate.FusedRMSNormSwishGate": [
                ({"hidden_size": 32}, None),
                ({"hidden_size": 8, "elementwise_affine": False, "dtype": fp16}, META),
            ],
            "fla.modules.norm.layernorm.RMSNorm": [
                ({"hidden_size": 64}, None),
                ({"hidden_size": 32, "bias": True, "eps": 1e-6}, None),
                ({"hidden_size": 32, "elementwise_affine": False}, None),
                ({"hidden_size": 16, "device": "meta", "dtype": bf16}, None),
                ({"hidden_size": 12}, META),
            ],
        },
    ),
    "mamba_ssm": (
        "mamba-ssm",
        {
            "mamba_ssm.ops.triton.layernorm_gated.RMSNorm": [
                ({"hidden_size": 64}, None),
                (
                    {"hidden_size": 128, "eps": 1e-6, "group_size": 32, "norm_before_gate": False,
                     "device": "meta", "dtype": bf16},
                    None,
                ),
                ({"hidden_size": 16}, META),
            ],
            "mamba_ssm.ops.triton.layernorm_gated.LayerNorm": [
                ({"hidden_size": 64}, None),
                ({"hidden_size": 32, "group_size": 16, "dtype": fp16}, META),
            ],
            "mamba_ssm.modules.mamba2.Mamba2": [
                ({"d_model": 64, "d_state": 16, "headdim": 16}, None),
                (
                    {"d_model": 64, "d_state": 32, "headdim": 32, "ngroups": 2, "D_has_hdim": True, "rmsnorm": False,
                     "bias": True, "conv_bias": False, "chunk_size": 64, "device": "meta", "dtype": bf16},
                    None,
                ),
                (
                    {"d_model": 32, "d_state": 8, "headdim": 8, "d_ssm": 32, "layer_idx": 3, "dt_limit": (0.0, 0.1),
                     "conv_init": 0.5, "use_mem_eff_path": False},
                    None,
                ),
                ({"d_model": 48, "d_state": 16, "headdim": 24, "expand": 1, "norm_before_gate": True}, META),
            ],
        },
    ),
    "apex": (
        "apex",
        {
            "apex.normalization.fused_layer_norm.FusedLayerNorm": [
                ({"normalized_shape": 64}, None),
                ({"normalized_shape": (4, 8), "eps": 1e-6, "elementwise_affine": False}, None),
                ({"normalized_shape": [16], "memory_efficient": True}, META),
            ],
            "apex.normalization.fused_layer_norm.FusedRMSNorm": [
                ({"normalized_shape": 64}, None),
                ({"normalized_shape": (4, 8), "elementwise_affine": False}, None),
                ({"normalized_shape": 32}, META),
            ],
            "apex.normalization.fused_layer_norm.MixedFusedLayerNorm": [
                ({"normalized_shape": 64}, None),
                ({"normalized_shape": 32, "eps": 1e-6, "memory_efficient": True}, META),
            ],
            "apex.normalization.fused_layer_norm.MixedFusedRMSNorm": [
                ({"normalized_shape": 64}, None),
                ({"normalized_shape": 16}, META),
            ],
        },
    ),
    "flash_attn": (
        "flash-attn",
        {
            "flash_attn.ops.fused_dense.FusedDense": [
                ({"in_features": 32, "out_features": 64}, None),
                (
                    {"in_features": 16, "out_features": 8, "bias": False, "return_residual": True, "device": "meta",
                     "dtype": bf16},
                    None,
                ),
                ({"in_features": 8, "out_features": 8}, META),
            ],
            "flash_attn.layers.rotary.RotaryEmbedding": [
                ({"dim": 32}, None),
                ({"dim": 16, "base": 500000.0, "interleaved": True, "scale_base": 512, "device": "meta"}, None),
                ({"dim": 64}, META),
            ],
            "flash_attn.ops.rms_norm.RMSNorm": [
                ({"hidden_size": 64}, None),
                ({"hidden_size": 32, "eps": 1e-6, "device": "meta", "dtype": fp16}, None),
                ({"hidden_size": 16}, META),
            ],
        },
    ),
}


def build(cls: type, kwargs: dict, default_device: str | None) -> torch.nn.Module:
    """Construct one grid case, under ``with torch.device(default_device)`` when one is named."""
    if default_device is None:
        return cls(**kwargs)
    with torch.device(default_device):
        return cls(**kwargs)
