"""Traces the NDIF end-to-end tests send (and run locally for the reference values)."""
from __future__ import annotations

from typing import Any

#: ~1000 tokens: its logits (~1000 x 512 float32, ~2 MB) exceed the loopback Redis's 1 MiB inline limit
LONG_PROMPT = " ".join(["the model loads the weights on the GPU"] * 120)


def long_logits(lm: Any, **trace_kwargs: Any) -> dict[str, Any]:
    with lm.trace(LONG_PROMPT, **trace_kwargs):
        logits = lm.lm_head.output.save()
    return {"logits": logits}
