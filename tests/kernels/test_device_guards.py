"""Every Triton launch in hybridload.kernels runs on its inputs' device, not the current CUDA device.

Triton launches on the current device; on a model split across GPUs (``device_map="balanced"``) a layer on
``cuda:1`` is called while ``cuda:0`` is current. The launchers therefore launch inside ``device_guard(x)``.
This file checks the source (every ``kernel[grid](...)`` call sits lexically inside a ``with device_guard(...)``
block) and the guard itself; the two-GPU run that launches on ``cuda:1`` needs a multi-GPU machine.
"""
from __future__ import annotations

import ast
from pathlib import Path

import torch

import hybridload.kernels as kernels_package
from hybridload.kernels._runtime import device_guard

KERNELS = Path(kernels_package.__file__).parent


def _launches(tree: ast.AST) -> list[ast.Call]:
    """``name[grid](...)`` calls: a call whose callee is a subscript (Triton's launch syntax)."""
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript)]


def _guarded_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With) and any(
            isinstance(item.context_expr, ast.Call) and getattr(item.context_expr.func, "id", None) == "device_guard"
            for item in node.items
        ):
            lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


def test_every_launch_is_inside_a_device_guard():
    found, unguarded = 0, []
    for path in sorted(KERNELS.glob("_*_triton.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        guarded = _guarded_lines(tree)
        for call in _launches(tree):
            found += 1
            if call.lineno not in guarded:
                unguarded.append(f"{path.name}:{call.lineno}")
    assert found >= 6  # conv fwd/update, gated norm, state update; w4a16's one launch helper (JIT and compiled)
    assert unguarded == []


def test_the_guard_follows_the_tensor_and_is_inert_off_cuda():
    cpu = torch.zeros(1)
    meta = torch.empty(1, device="meta")
    for tensor in (cpu, meta, object()):
        with device_guard(tensor) as entered:
            assert entered is None  # nullcontext: nothing to switch for CPU, meta or non-tensors

    class FakeCudaTensor:
        device = torch.device("cuda", 1)

    guard = device_guard(FakeCudaTensor())
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1  # not entered: no GPU here
