"""The trace the end-to-end test sends to the server and the server also runs locally on its own model.

Layers of the bundled ``hybrid_tiny`` example (pattern ``M-M*ME-M``): 2 is a Mamba2 block (its mixer calls
``rmsnorm_fn`` from mamba_ssm on every path), 3 is an attention block.
"""
from __future__ import annotations

from typing import Any

PROMPT = "the model loads the weights on the GPU"


def ablate_and_scale(lm: Any, prompt: str = PROMPT, **trace_kwargs: Any) -> dict[str, Any]:
    """Ablate layer 2's mixer output, double layer 3's output; save both layer outputs and the logits."""
    with lm.trace(prompt, **trace_kwargs):
        lm.backbone.layers[2].mixer.output[:] = 0
        ablated = lm.backbone.layers[2].output.save()
        lm.backbone.layers[3].output = lm.backbone.layers[3].output * 2.0
        scaled = lm.backbone.layers[3].output.save()
        logits = lm.lm_head.output.save()
    return {"ablated": ablated, "scaled": scaled, "logits": logits}


def plain(lm: Any, prompt: str = PROMPT, **trace_kwargs: Any) -> dict[str, Any]:
    """The same outputs without interventions (to show the interventions changed something)."""
    with lm.trace(prompt, **trace_kwargs):
        ablated = lm.backbone.layers[2].output.save()
        scaled = lm.backbone.layers[3].output.save()
        logits = lm.lm_head.output.save()
    return {"ablated": ablated, "scaled": scaled, "logits": logits}
