"""4.x weight tying for remote models built inside a window.

4.x tied a model's output embeddings to its input embeddings whenever ``config.tie_word_embeddings`` was
true (default True), whatever ``_tied_weights_keys`` held (a list of names, or None). 5.x ties only what a
``{target: source}`` dict in ``_tied_weights_keys`` names, and crashes in ``post_init`` on the 4.x list.
So for a remote model whose config ties embeddings, ``post_init`` first gives the instance the 5.x mapping
4.x would have applied: ``{output embeddings weight: input embeddings weight}`` (empty without output
embeddings). A dict ``_tied_weights_keys`` (remote code written for 5.x) is left alone.
"""
from __future__ import annotations

from typing import Any

from ..hooks.passthrough import passes_through
from ..hooks.patch import Patch
from . import record as state
from .configs import is_remote_class


def _module_name(root: Any, target: Any) -> str | None:
    for name, module in root.named_modules(remove_duplicate=False):
        if module is target:
            return name
    return None


def legacy_tied_mapping(model: Any) -> dict[str, str]:
    """The ``{target: source}`` pairs 4.x ``tie_weights`` would have tied for ``model``."""
    try:
        output = model.get_output_embeddings()
        inputs = model.get_input_embeddings()
    except (NotImplementedError, AttributeError):
        return {}
    if output is None or inputs is None or output is inputs:
        return {}
    if getattr(output, "weight", None) is None or getattr(inputs, "weight", None) is None:
        return {}
    out_name, in_name = _module_name(model, output), _module_name(model, inputs)
    if out_name is None or in_name is None:
        return {}
    prefix = lambda name: f"{name}." if name else ""  # noqa: E731
    return {f"{prefix(out_name)}weight": f"{prefix(in_name)}weight"}


def _ties_embeddings(model: Any) -> bool:
    config = getattr(model, "config", None)
    if config is None:
        return False
    try:
        text = config.get_text_config(decoder=True)
    except Exception:  # noqa: BLE001 - remote configs may not support it; fall back to the config itself
        text = config
    return bool(getattr(text, "tie_word_embeddings", False))


def apply_legacy_tying(model: Any) -> None:
    """Replace a 4.x ``_tied_weights_keys`` (list/None) on a remote model that ties embeddings."""
    if not is_remote_class(type(model)):
        return
    declared = getattr(model, "_tied_weights_keys", None)
    if isinstance(declared, dict) or not _ties_embeddings(model):
        return
    mapping = legacy_tied_mapping(model)
    if not mapping and declared is None:
        return
    model._tied_weights_keys = mapping
    state.fire("model.tied_weights_keys", f"{type(model).__qualname__}: {declared!r} -> {mapping!r}")


def _make_post_init(original: Any) -> Any:
    @passes_through
    def post_init(self: Any) -> Any:
        if state.active():
            from .names import replay_for

            replay_for(type(self), type(getattr(self, "config", None)))
            apply_legacy_tying(self)
        return original(self)

    return post_init


def _pretrained_model() -> type:
    from transformers import PreTrainedModel

    return PreTrainedModel


#: while compat windows are open, ``PreTrainedModel.post_init`` applies 4.x tying first (a window's thread)
POST_INIT_PATCH = Patch(_pretrained_model, "post_init", _make_post_init, lazy=True, key="transformers.PreTrainedModel.post_init")
