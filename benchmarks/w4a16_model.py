"""Whole-model decode: the bundled NVFP4 example scaled to Nemotron-3-Nano-like widths, NVFP4 vs bf16 (CUDA).

    PYTHONPATH=tests/fakekernels:src HYBRIDLOAD_DISABLE=1 python benchmarks/w4a16_model.py [--out FILE.json]

The hybrid_tiny remote code with hidden 2688, Mamba2 64 heads x 64, attention 32 heads (2 kv) x 128,
MoE 128 experts top-6 of width 1856 plus a 3712-wide shared expert, vocab 32000, layers ``MEMEM*EM``, bf16
random weights. The NVFP4 checkpoint is written with :func:`hybridload.quant.write_nvfp4_checkpoint` and
served with :func:`hybridload.quant.load_quantized` (``device_map="cuda"``, grouped MoE). The bf16 model is
the same weights unquantized, its MoE given the same sparse routing (the routed experts' weights gathered,
then batched matmuls) so that both read only the active experts. ``tests/fakekernels`` provides mamba_ssm /
causal_conv1d as pure-PyTorch functions on both sides, identical work for both.

Recorded: weight bytes of both models, eager decode tokens/s (batch 1, after a 16-token prefill), and the
GPU busy time per decode step from the CUDA profiler (kernel time only, host launch gaps excluded).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SCALED = {
    "hidden_size": 2688, "vocab_size": 32000, "num_hidden_layers": 8, "hybrid_override_pattern": "MEMEM*EM",
    "intermediate_size": 10752, "num_attention_heads": 32, "num_key_value_heads": 2, "head_dim": 128,
    "ssm_state_size": 128, "mamba_num_heads": 64, "mamba_n_groups": 8, "mamba_head_dim": 64, "mamba_chunk_size": 128,
    "n_routed_experts": 128, "num_experts_per_tok": 6, "moe_intermediate_size": 1856,
    "moe_shared_expert_intermediate_size": 3712, "dtype": "bfloat16",
}


def _bf16_sparse_moe(block, hidden_states, topk_indices, topk_weights):
    """bf16 baseline with the same sparse routing: gather the routed experts' weights, batched matmuls."""
    up, down = block._bf16_up, block._bf16_down  # (E, I, H), (E, H, I)
    act = block.experts[0].act_fn
    t, k = topk_indices.shape
    ids = topk_indices.reshape(-1)
    x = hidden_states.repeat_interleave(k, dim=0).unsqueeze(-1)  # (T*k, H, 1)
    h = act(torch.bmm(up[ids], x))  # (T*k, I, 1)
    out = torch.bmm(down[ids], h).view(t, k, -1)
    return (out.to(topk_weights.dtype) * topk_weights.unsqueeze(-1)).sum(1).type(hidden_states.dtype)


def bind_bf16_sparse_moe(model) -> int:
    bound = 0
    for block in model.modules():
        experts = getattr(block, "experts", None)
        if isinstance(experts, torch.nn.ModuleList) and callable(getattr(block, "moe", None)):
            block._bf16_up = torch.stack([e.up_proj.weight.detach() for e in experts])
            block._bf16_down = torch.stack([e.down_proj.weight.detach() for e in experts])
            for i, e in enumerate(experts):
                e.up_proj.weight.data = block._bf16_up[i]
                e.down_proj.weight.data = block._bf16_down[i]
            block.moe = types.MethodType(_bf16_sparse_moe, block)
            bound += 1
    return bound


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def decode(model, prompt: torch.Tensor, steps: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    device = prompt.device

    with torch.no_grad():
        out = model(prompt, use_cache=True)
        cache = out.past_key_values
        token = out.logits[:, -1:].argmax(-1)
        for _ in range(4):  # warm up (Triton compiles, allocator)
            out = model(token, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            out = model(token, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
        _sync(device)
        eager = (time.perf_counter() - start) / steps
        if device.type != "cuda":
            return {"eager_s_per_token": eager, "eager_tokens_per_s": 1 / eager, "gpu_us_per_step": None, "gpu_bound_tokens_per_s": None}
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(8):
                out = model(token, past_key_values=cache, use_cache=True)
                token = out.logits[:, -1:].argmax(-1)
            torch.cuda.synchronize()
    gpu_us = sum(e.device_time_total for e in prof.key_averages()) / 8
    return {"eager_s_per_token": eager, "eager_tokens_per_s": 1 / eager, "gpu_us_per_step": gpu_us,
            "gpu_bound_tokens_per_s": 1e6 / gpu_us}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "w4a16-model-h100.json")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--dry-run", action="store_true", help="tiny widths on CPU: checks the plumbing only")
    args = parser.parse_args()
    device = "cpu" if args.dry_run else "cuda"
    scaled = dict(SCALED)
    if args.dry_run:
        scaled.update(hidden_size=64, vocab_size=512, intermediate_size=128, num_attention_heads=4, head_dim=16,
                      ssm_state_size=16, mamba_num_heads=8, mamba_n_groups=2, mamba_head_dim=16, mamba_chunk_size=16,
                      n_routed_experts=8, moe_intermediate_size=32, moe_shared_expert_intermediate_size=64)

    import hybridload
    from transformers import AutoConfig, AutoModelForCausalLM

    from hybridload.quant import write_nvfp4_checkpoint
    from hybridload.serve.quantized import load_quantized
    from hybridload.serve.quantized import packed_weight_bytes

    source = hybridload.examples.path("hybrid_tiny")
    work = Path(tempfile.mkdtemp(prefix="w4a16-model-"))
    try:
        for name in ("configuration_nemotron_h.py", "modeling_nemotron_h.py", "tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(source / name, work / name)
        config_dict = {**json.loads((source / "config.json").read_text()), **scaled}
        (work / "config.json").write_text(json.dumps(config_dict))
        config = AutoConfig.from_pretrained(str(work), trust_remote_code=True)
        torch.manual_seed(0)
        with torch.device(device):
            bf16 = AutoModelForCausalLM.from_config(config, trust_remote_code=True, dtype=torch.bfloat16).eval()
        bf16_bytes = packed_weight_bytes(bf16)
        quant_dir = work / "nvfp4"
        t0 = time.perf_counter()
        write_nvfp4_checkpoint(bf16, quant_dir, exclude=("lm_head",), config=config_dict)
        for name in ("configuration_nemotron_h.py", "modeling_nemotron_h.py"):
            shutil.copyfile(source / name, quant_dir / name)
        write_s = time.perf_counter() - t0
        prompt = torch.randint(3, scaled["vocab_size"], (1, 16), generator=torch.Generator().manual_seed(1)).to(device)
        moe_blocks = bind_bf16_sparse_moe(bf16)
        result_bf16 = decode(bf16, prompt, args.steps)
        with torch.no_grad():
            bf16_logits = bf16(prompt).logits.float()
        del bf16
        if device == "cuda":
            torch.cuda.empty_cache()

        t0 = time.perf_counter()
        plan = hybridload.resolve(str(quant_dir), trust_remote_code=True)
        model = load_quantized(hybridload.load_meta(plan), quant_dir, device_map=device).eval()
        load_s = time.perf_counter() - t0
        quant_bytes = packed_weight_bytes(model)
        result_q = decode(model, prompt, args.steps)
        with torch.no_grad():
            q_logits = model(prompt).logits.float()
        rel = float((q_logits - bf16_logits).norm() / bf16_logits.norm())
        import transformers

        record = {
            "environment": {"gpu": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (dry run)",
                            "torch": torch.__version__,
                            "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d")},
            "config": scaled,
            "bf16": {**result_bf16, "weight_bytes": bf16_bytes, "sparse_moe_blocks": moe_blocks},
            "nvfp4": {**result_q, "weight_bytes": quant_bytes, "backends": model.hybridload_quant_backends,
                      "grouped_moe": model.hybridload_grouped_moe, "write_s": write_s, "load_quantized_s": load_s},
            "weight_bytes_ratio": quant_bytes / bf16_bytes,
            "eager_tokens_per_s_ratio": result_q["eager_tokens_per_s"] / result_bf16["eager_tokens_per_s"],
            "gpu_bound_tokens_per_s_ratio": (result_q["gpu_bound_tokens_per_s"] / result_bf16["gpu_bound_tokens_per_s"])
            if device == "cuda" else None,
            "prefill_logits_rel_l2_nvfp4_vs_bf16": rel,
        }
        print(json.dumps(record, indent=1))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
