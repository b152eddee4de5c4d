"""Laptop side of an nnsight session on a hybrid (Mamba + attention) model that runs on an NDIF server.

    python examples/nnsight_remote.py                          # bundled example model; nothing is sent
    python examples/nnsight_remote.py --model ORG/NAME --revision main --remote
    python examples/nnsight_remote.py --model ORG/NAME --remote --host http://localhost:5001

No GPU and no kernel package (mamba_ssm, causal_conv1d, ...) is needed here: ``import hybridload`` before
building the model makes nnsight's meta build run inside hybridload's kernel shim, from one load plan (the
commit, the trust decision, the dtype and the server's attention implementation). ``--remote`` sends the
trace to ``nnsight.CONFIG.API.HOST`` (NDIF by default; set ``NDIF_API_KEY`` or ``CONFIG.API.APIKEY``); a
server that runs hybridload checks the tree digest the request carries and refuses a different tree.
"""
from __future__ import annotations

import argparse
import functools
from typing import Any

import hybridload  # first: nnsight's HuggingFace models now load through hybridload's load plan
import hybridload.examples

import nnsight
import torch

PROMPT = "The Mamba layers carry the state, the attention layers look back"


def build(model: str | None, revision: str | None, attn_implementation: str | None) -> Any:
    """The meta model: structure only, built on this machine without weights, kernels or a GPU."""
    source = model or str(hybridload.examples.path("hybrid_tiny"))
    return nnsight.TransformersModel(
        source, revision=revision, trust_remote_code=True, attn_implementation=attn_implementation
    )


def describe(lm: Any) -> dict[str, Any]:
    """What was built, from which plan, and what a remote request will say about it."""
    module = lm._module
    kinds = hybridload.layer_kinds(lm)
    return {
        "plan": module.hybridload_plan.describe(),
        "meta build": module.hybridload_build_report.summary(),
        "layers": f"{kinds.container}: {['+'.join(k) for k in kinds]}",
        "model key": lm.to_model_key(),
        "tree digest": lm._remoteable_get_env()["hybridload"]["digest"],
        "attention sent to the server": lm._remoteable_get_env()["attn_implementation"],
    }


def pick_layers(lm: Any) -> tuple[Any, int, int]:
    """The decoder-layer list, the first Mamba layer and the first attention layer (by hybridload.layer_kinds)."""
    kinds = hybridload.layer_kinds(lm)
    layers = functools.reduce(getattr, kinds.container.split("."), lm)
    mamba = next(i for i, k in enumerate(kinds) if "mamba" in k)
    attention = next(i for i, k in enumerate(kinds) if "attention" in k)
    return layers, mamba, attention


def scan(lm: Any, prompt: str = PROMPT) -> dict[str, tuple[int, ...]]:
    """Shapes through the model without weights (fake tensors through hybridload's kernel references)."""
    layers, mamba, attention = pick_layers(lm)
    with lm.scan(prompt):
        mixer = layers[mamba].mixer.output.shape.save()
        attn = layers[attention].output.shape.save()
        logits = lm.lm_head.output.shape.save()
    return {"mamba mixer": tuple(mixer), "attention layer": tuple(attn), "logits": tuple(logits)}


def ablate_and_scale(lm: Any, prompt: str = PROMPT, **trace_kwargs: Any) -> dict[str, Any]:
    """Zero the first Mamba mixer's output, double the first attention layer's output, save what follows."""
    layers, mamba, attention = pick_layers(lm)
    with lm.trace(prompt, **trace_kwargs):
        layers[mamba].mixer.output[:] = 0
        layers[attention].output = layers[attention].output * 2
        hidden = layers[attention].output.save()
        logits = lm.lm_head.output.save()
    return {"hidden": hidden, "logits": logits}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Hub repo id or local folder (default: hybridload's bundled example)")
    parser.add_argument("--revision", help="branch, tag or commit (pinned to a commit by the load plan)")
    parser.add_argument("--attn-implementation", help="the server's attention implementation, e.g. flash_attention_2")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--remote", action="store_true", help="run the trace on the server (else: build and scan only)")
    parser.add_argument("--host", help="server URL instead of nnsight.CONFIG.API.HOST")
    args = parser.parse_args(argv)

    lm = build(args.model, args.revision, args.attn_implementation)
    result: dict[str, Any] = describe(lm)
    if "flash" in str(lm.attn_implementation) and not torch.cuda.is_available():
        # transformers' flash-attention integration cannot run on fake tensors of a CPU machine
        print("scan skipped: the model is built with", lm.attn_implementation, "(the server's), which needs CUDA")
    else:
        result["scan"] = scan(lm, args.prompt)
    for name, value in result.items():
        print(f"{name}: {value}")
    if not args.remote:
        print("dry run: nothing was sent (add --remote to run the trace on the server)")
        return result
    if args.host:
        nnsight.CONFIG.API.HOST = args.host
    values = ablate_and_scale(lm, args.prompt, remote=True)
    last = values["logits"][0, -1]
    print(f"hidden {tuple(values['hidden'].shape)}, next token after the interventions: {int(last.argmax())}")
    if lm.tokenizer is not None:
        print("decoded:", repr(lm.tokenizer.decode([int(last.argmax())])))
    result["remote"] = values
    return result


if __name__ == "__main__":
    main()
