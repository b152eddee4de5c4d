"""The attention-implementation rule shared by the meta build and the real load.

transformers decides at ``__init__`` which attention a model runs with, and mixes two kinds of checks:
what the *class* supports (``_supports_flash_attn``, ``_supports_sdpa``, ``_supports_flex_attn``,
``_compatible_flash_implementations``) and what *this machine* has (flash-attn installed, a GPU). Remote
code often builds different modules per implementation, so a laptop must build with the value the server
uses, and the laptop has neither flash-attn nor a GPU.

The rule (:func:`choose`): keep only the class checks, evaluated as on a CUDA server.
  * nothing requested -> ``sdpa`` if the class supports it, else ``eager`` (transformers' default);
  * a requested implementation the class supports -> that implementation;
  * one it does not support -> the class default above, with a note (the server would refuse it, so both
    sides build with what the class supports and the plan records requested and built);
  * a flash implementation outside ``_compatible_flash_implementations`` -> the first compatible one with
    CUDA builds (what transformers picks on a CUDA machine);
  * a value transformers does not dispatch itself (``"flex"`` that a remote family maps to its own attention
    class) -> passed to the model's own code unvalidated and recorded: the model decides, on both sides.
The meta build applies it through :func:`meta_attention` (machine checks skipped, only on meta); the real
load passes the built value to ``from_pretrained``, where transformers' own checks still run, so a server
without the kernel fails loudly instead of silently building something else.
"""
from __future__ import annotations

import contextlib
import contextvars
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..errors import PlanError
from ..hooks.passthrough import passes_through
from ..hooks.patch import Patch

_FLASH_RE = re.compile(r"^flash_attention_(\d)$")
SERVER_DEVICE = "cuda"


@dataclass(frozen=True)
class AttentionChoice:
    requested: str | None
    built: str
    note: str


def class_default(model_class: type) -> str:
    return "sdpa" if getattr(model_class, "_supports_sdpa", False) else "eager"


def _is_flash(name: str) -> bool:
    try:
        from transformers.utils.generic import is_flash_attention_requested
    except ImportError:  # older transformers: flash implementations are named flash_attention_N or "*flash*"
        return "flash" in name
    return bool(is_flash_attention_requested(requested_attention_implementation=name))


def _server_compatible_flash(model_class: type, name: str) -> tuple[str, str]:
    compatible = getattr(model_class, "_compatible_flash_implementations", None)
    if not compatible or name in compatible:
        return name, ""
    try:
        from transformers.modeling_flash_attention_utils import FLASH_ATTN_KERNEL_DEVICES, FLASH_ATTN_KERNEL_FALLBACK
    except ImportError:  # pragma: no cover - older transformers
        FLASH_ATTN_KERNEL_DEVICES, FLASH_ATTN_KERNEL_FALLBACK = {}, {}
    on_server = [
        impl
        for impl in compatible
        if SERVER_DEVICE in FLASH_ATTN_KERNEL_DEVICES.get(FLASH_ATTN_KERNEL_FALLBACK.get(impl, impl), (SERVER_DEVICE,))
    ]
    chosen = (on_server or list(compatible))[0]
    return chosen, f"{model_class.__name__} is compatible with {list(compatible)}; {name} -> {chosen} (as on a CUDA server)"


def _known_implementations() -> list[str]:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    keys = ALL_ATTENTION_FUNCTIONS.valid_keys() if hasattr(ALL_ATTENTION_FUNCTIONS, "valid_keys") else ALL_ATTENTION_FUNCTIONS.keys()
    return ["eager", *keys]


def dispatched_by_transformers(name: str) -> bool:
    """Whether transformers' own attention selection handles ``name`` (else the model's code must)."""
    if name in ("eager", "paged|eager") or name.startswith("paged|") or "/" in name:
        return True
    return _is_flash(name) or "flex_attention" in name or "sdpa" in name or name in _known_implementations()


def choose(model_class: type, requested: str | None, *, source: str = "argument") -> AttentionChoice:
    """Apply the rule to ``model_class`` (see the module docstring). Machine-independent.

    ``source`` says where ``requested`` came from (``"argument"``, ``"config.json"``), for the notes.
    """
    if requested is not None and not isinstance(requested, str):
        raise PlanError(
            f"attn_implementation must be a string such as 'sdpa' or 'flash_attention_2', got {requested!r} "
            "(per-sub-config dicts are not supported in load plans)"
        )
    default = class_default(model_class)
    cls_name = model_class.__name__
    if requested is None:
        return AttentionChoice(None, default, f"transformers default for {cls_name}")
    name = requested
    notes = []
    if name.startswith("paged|") and name != "paged|eager":
        name = name.removeprefix("paged|")
        notes.append(f"{requested} -> {name} (the paged| prefix is deprecated)")
    if name in ("eager", "paged|eager"):
        return AttentionChoice(requested, name, "; ".join(notes) or "eager is always available")
    flash = _is_flash(name)
    if flash:
        name, note = _server_compatible_flash(model_class, name)
        if note:
            notes.append(note)
        supported = bool(getattr(model_class, "_supports_flash_attn", False))
        what = "flash attention (_supports_flash_attn)"
        if not supported and getattr(model_class, "_supports_flash_attn_2", False):
            what += "; the legacy _supports_flash_attn_2 flag is not honoured by this transformers"
    elif "flex_attention" in name:
        supported, what = bool(getattr(model_class, "_supports_flex_attn", False)), "flex attention (_supports_flex_attn)"
    elif "sdpa" in name:
        supported, what = bool(getattr(model_class, "_supports_sdpa", False)), "SDPA (_supports_sdpa)"
    elif "/" in name:  # a Hub kernel ("org/kernel"): availability is the server's business
        return AttentionChoice(requested, name, "; ".join(notes + ["Hub kernel, checked by the real load"]))
    elif name in _known_implementations():
        return AttentionChoice(requested, name, "; ".join(notes) or "registered attention function")
    else:
        origin = " (from config.json)" if source == "config.json" else ""
        notes.append(
            f"{requested!r}{origin} is not an attention implementation transformers dispatches; passed to "
            f"{cls_name}'s own code unvalidated (the model decides, on the client and on the server)"
        )
        return AttentionChoice(requested, name, "; ".join(notes))
    if source == "config.json":
        notes.append(f"{requested!r} comes from config.json")
    if supported:
        return AttentionChoice(requested, name, "; ".join(notes) or f"{cls_name} supports {name}")
    notes.append(
        f"{cls_name} does not declare {what}; the server would refuse {name}, so both builds use the class "
        f"default {default}"
    )
    return AttentionChoice(requested, default, "; ".join(notes))


# -- meta builds: the class checks only -------------------------------------------------------------------
_active: contextvars.ContextVar[bool] = contextvars.ContextVar("hybridload_meta_attention", default=False)


def accelerate_empty_weights() -> bool:
    """accelerate's ``init_empty_weights`` is active (it patches ``Module.register_parameter`` while open)."""
    import torch

    return getattr(torch.nn.Module.register_parameter, "__name__", "") == "register_empty_parameter"


def building_on_meta() -> bool:
    """True inside ``torch.device("meta")`` (nnsight's MetaDevice included) or accelerate's init_empty_weights."""
    import torch

    return torch.get_default_device().type == "meta" or accelerate_empty_weights()


def _make_check(original: Callable) -> Callable:
    @passes_through
    def _check_and_adjust_attn_implementation(self: Any, *args: Any, **kwargs: Any) -> str:
        if _active.get() and building_on_meta():
            requested = args[0] if args else kwargs.get("attn_implementation")
            if requested is None or (isinstance(requested, str) and dispatched_by_transformers(requested)):
                return choose(type(self), requested).built
        return original(self, *args, **kwargs)

    return _check_and_adjust_attn_implementation


def _pretrained_model() -> type:
    from transformers.modeling_utils import PreTrainedModel

    return PreTrainedModel


ATTENTION_PATCH = Patch(
    _pretrained_model, "_check_and_adjust_attn_implementation", _make_check, lazy=True,
    key="transformers.PreTrainedModel._check_and_adjust_attn_implementation",
)


@contextlib.contextmanager
def meta_attention() -> Iterator[None]:
    """While open (and only for builds on meta), attention is chosen by :func:`choose`, not by this machine."""
    ATTENTION_PATCH.acquire()
    token = _active.set(True)
    try:
        yield
    finally:
        _active.reset(token)
        ATTENTION_PATCH.release()
