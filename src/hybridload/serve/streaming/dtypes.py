"""The dtype each model tensor is loaded in, decided the way ``from_pretrained`` decides it.

from_pretrained builds the model under the load dtype, so a meta tensor's dtype is already the answer:
parameters follow the build default, tensors the modeling code pins (fp32 router biases, int buffers)
keep theirs, and ``_keep_in_fp32_modules`` win over both. With ``dtype=None`` the meta dtypes are used
as they are. An explicit ``dtype`` re-targets exactly the tensors that followed the build default.
"""
from __future__ import annotations

from typing import Any, Collection

import torch
from transformers.core_model_loading import build_glob_alternation

from ...errors import PlanError


def parse_dtype(dtype: Any) -> torch.dtype | None:
    """None/"auto" -> None (keep the meta build's dtypes); a torch dtype or its name -> that dtype."""
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(resolved, torch.dtype):
            raise PlanError(f"dtype={dtype!r} is not a torch dtype name (use e.g. 'bfloat16', 'float16', 'float32').")
        dtype = resolved
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise PlanError(f"dtype={dtype!r} must be a floating-point torch dtype (e.g. torch.bfloat16) or 'auto'.")
    return dtype


class TargetDtypes:
    """key -> dtype the loaded tensor must have."""

    def __init__(self, model: Any, dtype: torch.dtype | None, keep: Collection[str] = ()) -> None:
        self._meta = {name: t.dtype for name, t in model.state_dict(keep_vars=True).items()}
        self._keep = frozenset(keep)  # loaded in their meta dtype, whatever dtype says (packed quantized tensors)
        self.build_dtype = build_dtype(model)
        self.dtype = dtype
        # from_pretrained computes the keep-in-fp32 plan from the load dtype, which is the build dtype
        plan = model._get_dtype_plan(dtype or self.build_dtype) if (dtype or self.build_dtype) else {}
        self._plan_regex = None
        if plan:
            regex, by_group, _ = build_glob_alternation(list(plan))
            self._plan_regex, self._plan_groups, self._plan = regex, by_group, plan

    def keys(self) -> set[str]:
        """Every key the checkpoint must provide for (parameters and persistent buffers)."""
        return set(self._meta)

    def for_key(self, key: str) -> torch.dtype:
        meta_dtype = self._meta[key]
        if key in self._keep:
            return meta_dtype
        if self._plan_regex is not None:
            match = self._plan_regex.search(key)
            if match is not None:
                return self._plan[self._plan_groups[match.lastgroup]]
        if self.dtype is not None and meta_dtype.is_floating_point and meta_dtype == self.build_dtype:
            return self.dtype
        return meta_dtype


def build_dtype(model: Any) -> torch.dtype | None:
    """The default dtype the model was built under: the floating dtype holding most parameter elements."""
    counts: dict[torch.dtype, int] = {}
    for param in model.parameters():
        if param.is_floating_point():
            counts[param.dtype] = counts.get(param.dtype, 0) + param.numel()
    return max(counts, key=counts.__getitem__) if counts else None
