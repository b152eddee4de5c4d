"""The Kimi-style fixture as the GPU runs serve it: same fla idioms, runnable on a host without flash-attn.

``tests/twins/kimi_toy_fixture.py`` is the Kimi-Linear-style remote-code model the GPU-less tests build.
Two of its lines cannot run on the device: flash-attn has no wheel for the device's torch 2.11/CUDA 13 (and
a source build does not fit a session), and the fixture calls ``fused_kda_gate`` with fla 0.4's signature
(``(g, A_log, head_dim, g_bias=...)``, as Kimi-Linear's published code does), which the carried fla 0.6.0
rejects. The variant rewrites exactly those lines, from the fixture's own source, so everything else (module
level ``from fla ... import``, three ``ShortConvolution`` and one ``FusedRMSNormGated`` per KDA layer,
``@tensor_cache``, recurrent KDA for T <= 64 and chunked KDA above) stays the fixture's:

* the MLA layers call ``torch.nn.functional.scaled_dot_product_attention`` instead of ``flash_attn_func``,
  and the model no longer forces ``flash_attention_2`` (``eager``, the class default, is built);
* the gate is called with the fla >= 0.5 signature ``fused_kda_gate(g[..., H, K], A_log, dt_bias=...)``.

A rewrite that no longer matches the fixture fails loudly (each edit must apply exactly once).
Weights are drawn from a seeded generator and written with safetensors (not ``save_pretrained``, which
would rewrite config.json with version-dependent fields and so change the plan's folder fingerprint).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [p for p in (str(_REPO / "tests" / "twins"),) if p not in sys.path]

from kimi_toy_fixture import MODELING_PY, write_kimi_toy  # noqa: E402

#: where both machines write the folder: a local plan names its folder by absolute path
FOLDER = Path("/tmp/hybridload-gpu/kimi_gpu")

#: fla's Triton kernels want head dims of 16 or more; 64 is what the twin/kernel checks used
CONFIG: dict[str, Any] = {
    "vocab_size": 256,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "kv_lora_rank": 32,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 16,
    "v_head_dim": 16,
    "rms_norm_eps": 1e-5,
    "linear_attn_config": {
        "kda_layers": [1, 2, 4], "full_attn_layers": [3], "num_heads": 2, "head_dim": 64, "short_conv_kernel_size": 4,
    },
}

EDITS: tuple[tuple[str, str], ...] = (
    ("from flash_attn import flash_attn_func\n", ""),
    (
        "        g = fused_kda_gate(g, self.A_log, self.head_dim, g_bias=self.dt_bias)\n",
        "        g = fused_kda_gate(head_split(g, self.head_dim), self.A_log.view(-1), dt_bias=self.dt_bias)\n",
    ),
    (
        '        assert self.config._attn_implementation == "flash_attention_2"\n'
        "        v = F.pad(v, [0, self.q_head_dim - self.v_head_dim])  # flash-attn needs v's head dim == q's\n"
        "        out = flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=self.q_head_dim ** -0.5, causal=True)\n"
        "        out = out[..., : self.v_head_dim].reshape(bsz, q_len, -1)\n",
        "        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),\n"
        "                                             is_causal=True, scale=self.q_head_dim ** -0.5)\n"
        "        out = out.transpose(1, 2).reshape(bsz, q_len, -1)\n",
    ),
    (
        '        if getattr(config, "_attn_implementation", None) != "flash_attention_2":\n'
        '            config._attn_implementation = "flash_attention_2"  # Kimi-Linear only supports flash attention\n',
        "",
    ),
)


class FixtureDrift(RuntimeError):
    """The fixture's source changed so that an edit no longer applies: update EDITS with it."""


def modeling_source() -> str:
    source = MODELING_PY
    for old, new in EDITS:
        count = source.count(old)
        if count != 1:
            raise FixtureDrift(f"expected exactly one occurrence in kimi_toy_fixture.MODELING_PY, found {count}:\n{old}")
        source = source.replace(old, new)
    return source


def write_folder(folder: Path = FOLDER) -> Path:
    """config.json and the two Python files (what the plan's fingerprint covers); no weights."""
    write_kimi_toy(folder, **CONFIG)
    (folder / "modeling_kimi_toy.py").write_text(modeling_source())
    return folder


def write_weights(folder: Path, state: dict[str, Any], seed: int = 0) -> Path:
    """Seeded float32 weights for every tensor in ``state`` (name -> tensor, any device) in model.safetensors.

    Scales keep activations near unit size through the layers so that logits are informative: linear and
    embedding weights ~ N(0, 1/fan_in), norm weights ~ 1 + N(0, 0.1), A_log = log U(1, 16), dt_bias small.
    """
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name in sorted(state):
        shape = tuple(state[name].shape)
        if name.endswith("A_log"):
            value = torch.empty(shape).uniform_(1, 16, generator=generator).log()
        elif name.endswith("dt_bias"):
            value = torch.randn(shape, generator=generator) * 0.1
        elif len(shape) == 1:  # norm weights
            value = 1 + torch.randn(shape, generator=generator) * 0.1
        else:
            fan_in = shape[-1] if "embed" not in name else 1
            if len(shape) == 3:  # ShortConvolution: (channels, 1, kernel)
                fan_in = shape[-1]
            value = torch.randn(shape, generator=generator) / fan_in**0.5
        out[name] = value.contiguous()  # float32 on disk; the plan's dtype is applied by the load
    save_file(out, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder
