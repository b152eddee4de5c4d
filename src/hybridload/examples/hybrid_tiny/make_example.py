"""Regenerate the bundled example ``hybrid_tiny`` deterministically (seeded): config, tokenizer, weights, signature.

    python make_example.py [--fakekernels PATH] [--out DIR] [--skip-signature]

The remote code (configuration_nemotron_h.py, modeling_nemotron_h.py) is hand-written: it is copied to
``--out`` (default: this folder, where it is left as is) and never generated.
Building the weights and the reference signature imports that code, which needs ``mamba_ssm`` (Nemotron-H
re-raises if ``rmsnorm_fn`` cannot be imported), so those steps run in a child process with the fake "real"
kernel packages of ``tests/fakekernels`` on PYTHONPATH: the situation of a GPU server with mamba_ssm and
causal_conv1d installed. The signature is taken from a *real* ``from_pretrained`` load of the checkpoint.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REMOTE_CODE = ("configuration_nemotron_h.py", "modeling_nemotron_h.py")
SEED = 20250501
VOCAB_SIZE = 512
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]  # ids 0, 1, 2 = pad, bos, eos, as in config.json

CONFIG = {
    "architectures": ["NemotronHForCausalLM"],
    "auto_map": {
        "AutoConfig": "configuration_nemotron_h.NemotronHConfig",
        "AutoModelForCausalLM": "modeling_nemotron_h.NemotronHForCausalLM",
    },
    "model_type": "nemotron_h",
    "dtype": "float32",
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 64,
    "num_hidden_layers": 8,
    "hybrid_override_pattern": "M-M*ME-M",
    "intermediate_size": 128,
    "mlp_hidden_act": "relu2",
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "attention_bias": False,
    "mlp_bias": False,
    "use_bias": False,
    "ssm_state_size": 16,
    "mamba_num_heads": 8,
    "mamba_n_groups": 2,
    "mamba_head_dim": 16,
    "mamba_d_conv": 4,
    "mamba_expand": 2,
    "mamba_hidden_act": "silu",
    "mamba_chunk_size": 16,
    "mamba_conv_bias": True,
    "mamba_proj_bias": False,
    "n_routed_experts": 4,
    "n_shared_experts": 1,
    "moe_intermediate_size": 32,
    "moe_shared_expert_intermediate_size": 64,
    "num_experts_per_tok": 2,
    "routed_scaling_factor": 1.0,
    "n_group": 1,
    "topk_group": 1,
    "norm_topk_prob": True,
    "layer_norm_epsilon": 1e-05,
    "initializer_range": 0.02,
    "residual_in_fp32": False,
    "rescale_prenorm_residual": True,
    "tie_word_embeddings": False,
    "use_cache": True,
    "max_position_embeddings": 4096,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

GENERATION_CONFIG = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "do_sample": False, "max_new_tokens": 16}

TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "pad_token": "<pad>",
    "model_max_length": 4096,
    "clean_up_tokenization_spaces": False,
    "padding_side": "left",
}


def _write_json(out: Path, name: str, data: dict) -> None:
    (out / name).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def corpus() -> list[str]:
    """A deterministic English-ish training text (no downloads): templated sentences over small word lists."""
    subjects = ["the model", "a kernel", "the server", "my laptop", "the tokenizer", "this layer", "the cache"]
    verbs = ["loads", "builds", "checks", "runs", "binds", "scans", "compares", "reads", "writes"]
    objects = ["the weights", "a signature", "the tree", "every expert", "the state", "some tokens", "its config"]
    tails = ["on the GPU.", "in CI.", "without CUDA.", "at the pinned commit.", "with real kernels.", "twice, to be sure."]
    lines = [" ".join(parts) for parts in itertools.product(subjects, verbs, objects, tails)]
    names = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Dennis", "Margaret"]
    things = ["notebook", "cluster", "pipeline", "checkpoint", "gradient", "activation", "benchmark", "question"]
    places = ["in Paris", "at home", "on Monday", "before lunch", "after midnight", "during the workshop"]
    lines += [f"{a} asked {b} about the {t} {p}." for a, b, t, p in itertools.product(names, names[::-1], things, places)]
    lines += [
        "Mamba2 mixers, attention, MLP and mixture-of-experts layers alternate: M-M*ME-M.",
        "Numbers like 0, 1, 2, 3, 42, 512 and 2025 appear too; so do symbols (+, -, *, /, =, #, @).",
        "Hello, world! How are you? I'm fine, thanks.",
    ]
    return lines


def write_tokenizer(out: Path) -> None:
    """Byte-level BPE (round-trips any text) trained offline with the ``tokenizers`` library."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    tokenizer.save(str(out / "tokenizer.json"))
    _write_json(out, "tokenizer_config.json", TOKENIZER_CONFIG)


def _init_parameters(model) -> None:
    """Seeded, informative random weights (unit-scale activations, so two code paths that disagree show it).

    Values are drawn and transformed in float64 and rounded to the parameter's dtype once: float32
    transcendentals (log, exp) are vectorised differently per CPU instruction set and can differ in the
    last bit, float64 ones rounded to float32 do not, so every machine writes the same bytes.
    """
    import torch

    gen = torch.Generator().manual_seed(SEED)
    f64 = torch.float64

    def normal(shape, std):
        return torch.randn(shape, generator=gen, dtype=f64) * std

    def uniform(shape):
        return torch.rand(shape, generator=gen, dtype=f64)

    config = model.config
    with torch.no_grad():
        for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
            leaf = name.rsplit(".", 1)[-1]
            if name.endswith("embeddings.weight"):
                value = normal(param.shape, 1.0)
            elif leaf == "A_log":
                value = torch.log(1 + 15 * uniform(param.shape))
            elif leaf == "D":
                value = 1 + normal(param.shape, 0.1)
            elif leaf == "dt_bias":
                low, high = math.log(config.time_step_min), math.log(config.time_step_max)
                dt = torch.exp(uniform(param.shape) * (high - low) + low).clamp(min=config.time_step_floor)
                value = dt + torch.log(-torch.expm1(-dt))  # inverse softplus
            elif leaf == "e_score_correction_bias":
                value = normal(param.shape, 0.01)
            elif "norm" in name and leaf == "weight":
                value = 1 + normal(param.shape, 0.1)
            elif "conv1d" in name:
                value = normal(param.shape, 0.5) if leaf == "weight" else normal(param.shape, 0.1)
            elif param.dim() == 2:  # Linear weights and the router: variance-preserving
                value = normal(param.shape, 1 / math.sqrt(param.shape[1]))
            else:
                value = normal(param.shape, 0.02)
            param.copy_(value.to(param.dtype))


def build_weights(out: Path) -> None:
    """Build the model class from ``out``'s remote code (mamba_ssm must be importable) and save a seeded checkpoint.

    The class is instantiated directly, not through ``from_config``: that keeps any meta-build window
    (``import hybridload``) out of the way, so the result is the same in any process.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    config = AutoConfig.from_pretrained(str(out), trust_remote_code=True)
    model_class = get_class_from_dynamic_module(config.auto_map["AutoModelForCausalLM"], str(out))
    torch.manual_seed(SEED)
    model = model_class(config).to(torch.float32)
    _init_parameters(model)
    tensors = {name: tensor.detach().contiguous() for name, tensor in sorted(model.state_dict().items())}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(out / "model.safetensors", 0o644)


def write_static_files(out: Path) -> None:
    """Everything that needs no model code: remote code (copied), config, generation config, tokenizer."""
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != HERE:
        for name in REMOTE_CODE:
            shutil.copyfile(HERE / name, out / name)
    _write_json(out, "config.json", CONFIG)
    _write_json(out, "generation_config.json", GENERATION_CONFIG)
    write_tokenizer(out)


def build_signature(out: Path) -> None:
    """Child-process step: a real load of the checkpoint (kernels importable), then its tree signature."""
    import torch
    from transformers import AutoModelForCausalLM

    from hybridload.tree.signature import signature

    model = AutoModelForCausalLM.from_pretrained(str(out), trust_remote_code=True, dtype=torch.float32)
    text = signature(model).to_json()
    (out / "reference_signature.json").write_text(text if text.endswith("\n") else text + "\n")


def _run_child(step: str, fakekernels: Path, out: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(fakekernels), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["HYBRIDLOAD_DISABLE"] = "1"  # transformers' own load: hybridload's integration must not shape the reference
    with tempfile.TemporaryDirectory() as modules_cache:
        env["HF_MODULES_CACHE"] = modules_cache  # keep transformers' copy of the remote code out of ~/.cache
        command = [sys.executable, str(Path(__file__).resolve()), "--step", step, "--out", str(out)]
        subprocess.run(command, env=env, check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_fakekernels = HERE.parents[3] / "tests" / "fakekernels"
    parser.add_argument("--fakekernels", type=Path, default=default_fakekernels,
                        help="folder with the fake mamba_ssm/causal_conv1d packages (default: the repo's tests/fakekernels)")
    parser.add_argument("--out", type=Path, default=HERE, help="where to write the example (default: this folder)")
    parser.add_argument("--skip-signature", action="store_true", help="do not regenerate reference_signature.json")
    parser.add_argument("--step", choices=["weights", "signature"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if args.step == "weights":
        return build_weights(out)
    if args.step == "signature":
        return build_signature(out)
    if not (args.fakekernels / "mamba_ssm" / "__init__.py").is_file():
        parser.error(f"no fake kernel packages at {args.fakekernels} (pass --fakekernels)")
    write_static_files(out)
    _run_child("weights", args.fakekernels.resolve(), out)
    if not args.skip_signature:
        _run_child("signature", args.fakekernels.resolve(), out)


if __name__ == "__main__":
    main()
