"""The skip-initialisation and paused-collector windows: what they skip, what they leave to torch, and
that they are scoped, re-entrant, thread-safe and reversible (also after exceptions)."""
from __future__ import annotations

import gc
import threading
from typing import Any, Callable

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from hybridload.build import fast_init, gc_pause
from hybridload.build.fast_init import skip_weight_init
from hybridload.build.gc_pause import collector_paused
from hybridload.hooks.patch import is_patched
from hybridload.build.attention import building_on_meta
from hybridload.build.fast_build import fast_build, meta_device_scope


def _meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(*shape, dtype=dtype, device="meta")


# --------------------------------------------------------------------------------------------------
# what is skipped
# --------------------------------------------------------------------------------------------------

def _data_normal(tensor: torch.Tensor) -> torch.Tensor:
    alias = tensor.data  # remote _init_weights: module.weight.data.normal_(...)
    alias.normal_(mean=0.0, std=0.02)
    return alias


#: each writes into the tensor it is given and returns the tensor whose version counter shows the write
WRITES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "uniform_": lambda t: t.uniform_(-0.1, 0.1),
    "uniform_ kw": lambda t: t.uniform_(**{"from": -1.0, "to": 1.0}),
    "normal_": lambda t: t.normal_(0.0, 0.02),
    "normal_ kw": lambda t: t.normal_(mean=0.0, std=0.02, generator=None),
    "fill_": lambda t: t.fill_(1.0),
    "zero_": lambda t: t.zero_(),
    "data.normal_": _data_normal,
    "nn.init.kaiming_uniform_": lambda t: nn.init.kaiming_uniform_(t, a=5 ** 0.5),
    "nn.init.xavier_normal_": nn.init.xavier_normal_,
    "nn.init.ones_": nn.init.ones_,
    "nn.init.constant_": lambda t: nn.init.constant_(t, 0.5),
}


@pytest.mark.parametrize("name", sorted(WRITES))
def test_writes_into_meta_tensors_are_skipped_inside_the_window(name: str) -> None:
    write = WRITES[name]
    with torch.no_grad():
        assert write(_meta(4, 4))._version > 0  # torch really writes (version counter) without the window
    inside = _meta(4, 4)
    with skip_weight_init(), torch.no_grad():
        written = write(inside)
    assert written._version == 0 and inside._version == 0
    assert written.shape == inside.shape and written.dtype == inside.dtype and written.is_meta


def test_torch_layers_skip_reset_parameters_on_meta_only() -> None:
    layers: dict[str, Callable[..., nn.Module]] = {
        "linear": lambda **kw: nn.Linear(8, 4, **kw),
        "bilinear": lambda **kw: nn.Bilinear(3, 4, 5, **kw),
        "conv": lambda **kw: nn.Conv2d(2, 4, 3, **kw),
        "embedding": lambda **kw: nn.Embedding(6, 4, padding_idx=2, **kw),
        "layer_norm": lambda **kw: nn.LayerNorm(4, **kw),
        "group_norm": lambda **kw: nn.GroupNorm(2, 4, **kw),
        "batch_norm": lambda **kw: nn.BatchNorm1d(4, **kw),
        "rms_norm": lambda **kw: nn.RMSNorm(4, **kw),
    }
    for name, make in layers.items():
        with skip_weight_init():
            meta = make(device="meta")
            torch.manual_seed(5)
            real = make(device="cpu")
        torch.manual_seed(5)
        reference = make(device="cpu")
        assert all(t._version == 0 for t in [*meta.parameters(), *meta.buffers()]), name
        for (key, a), (_, b) in zip(reference.state_dict().items(), real.state_dict().items()):
            assert torch.equal(a, b), f"{name}.{key}"


def test_a_layer_with_one_real_tensor_is_reset_by_torch() -> None:
    """accelerate's init_empty_weights() leaves buffers real: batch norm's running stats are reset."""
    from accelerate import init_empty_weights

    with init_empty_weights(), skip_weight_init():
        norm = nn.BatchNorm1d(4)
        norm.running_var.fill_(7.0)
        norm.reset_parameters()
    assert norm.weight.is_meta and norm.running_var.device.type == "cpu"
    assert torch.equal(norm.running_var, torch.ones(4))


def test_real_tensors_are_always_written() -> None:
    with skip_weight_init():
        torch.manual_seed(0)
        inside = torch.empty(5).normal_(), torch.empty(5).uniform_(), torch.zeros(5).fill_(3.0), torch.ones(5).zero_()
    torch.manual_seed(0)
    outside = torch.empty(5).normal_(), torch.empty(5).uniform_(), torch.zeros(5).fill_(3.0), torch.ones(5).zero_()
    for a, b in zip(inside, outside):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------------
# what is left to torch: every call torch would reject, every call another mode must see
# --------------------------------------------------------------------------------------------------

ERRORS: dict[str, Callable[[], Any]] = {
    "normal_ negative std": lambda: _meta(3).normal_(0.0, -1.0),
    "normal_ nan std": lambda: _meta(3).normal_(0.0, float("nan")),
    "normal_ integer dtype": lambda: _meta(3, dtype=torch.long).normal_(),
    "fill_ 1-d value": lambda: _meta(3).fill_(_meta(2)),
    "uniform_ unknown keyword": lambda: _meta(3).uniform_(low=0.0),
    "zero_ argument": lambda: _meta(3).zero_(1),
    "normal_ into a leaf that requires grad": lambda: nn.Parameter(_meta(3)).normal_(),
    "fill_ into a leaf that requires grad": lambda: nn.Parameter(_meta(3)).fill_(1.0),
    "kaiming_uniform_ of a 1-d tensor": lambda: nn.init.kaiming_uniform_(_meta(3)),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_calls_torch_rejects_are_rejected_inside_the_window_too(name: str) -> None:
    with pytest.raises((RuntimeError, TypeError, ValueError)) as outside:
        ERRORS[name]()
    with skip_weight_init(), pytest.raises(type(outside.value)) as inside:
        ERRORS[name]()
    assert str(inside.value) == str(outside.value)


def test_a_linear_whose_weight_was_swapped_for_a_1d_one_still_raises() -> None:
    layer = nn.Linear(4, 4, device="meta")
    layer.weight = nn.Parameter(_meta(4))
    with skip_weight_init(), pytest.raises(ValueError, match="fewer than 2 dimensions"):
        layer.reset_parameters()


def test_a_write_under_autograd_is_recorded_as_before() -> None:
    base = nn.Parameter(_meta(3))
    with skip_weight_init():
        derived = base * 2
        derived.normal_()
    assert derived.grad_fn is not None and derived.grad_fn.name() == "NormalBackward0"


class _Recorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.seen.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def test_another_torch_function_mode_sees_every_write() -> None:
    """A mode on the stack gets the call first (a layer's reset included); what it forwards to the meta
    device is then skipped."""
    recorder = _Recorder()
    with torch.device("meta"), recorder, skip_weight_init():
        tensor = torch.empty(3)
        tensor.fill_(2.0)
        tensor.normal_()
        layer = nn.Linear(4, 4)
    assert recorder.seen.count("fill_") == 1 and recorder.seen.count("normal_") == 1
    assert {"kaiming_uniform_", "uniform_"} <= set(recorder.seen)  # the layer's reset, weight and bias
    assert layer.weight.is_meta and tensor._version == 0


def test_a_mode_that_forwards_a_write_to_a_real_tensor_gets_it_written() -> None:
    class ToCpu(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            if getattr(func, "__name__", "") == "fill_":
                target = torch.zeros(3, device="cpu")
                func(target, *args[1:], **(kwargs or {}))
                self.target = target
            return func(*args, **(kwargs or {}))

    mode = ToCpu()
    with torch.device("meta"), mode, skip_weight_init():
        _meta(3).fill_(4.0)
    assert torch.equal(mode.target, torch.full((3,), 4.0))


def test_nnsight_meta_device_counts_as_the_meta_device() -> None:
    from nnsight.modeling.mixins.meta import MetaDevice

    with MetaDevice(), skip_weight_init():
        layer = nn.Linear(4, 4)
        buffer = torch.zeros(3, device="cpu")  # MetaDevice sends explicit devices to meta too
        buffer.fill_(1.0)
    assert layer.weight.is_meta and layer.weight._version == 0 and buffer.is_meta and buffer._version == 0


# --------------------------------------------------------------------------------------------------
# scoped, re-entrant, reversible, thread-safe
# --------------------------------------------------------------------------------------------------


def _patched() -> list[str]:
    return [f"{owner.__qualname__}.{name}" for owner, name in fast_init.patched_attributes()
            if is_patched(owner.__dict__.get(name))]


def test_patches_exist_only_while_a_window_is_open() -> None:
    assert _patched() == []
    with skip_weight_init():
        assert len(_patched()) >= 12 and "Tensor.normal_" in _patched() and "Linear.reset_parameters" in _patched()
        with skip_weight_init():
            assert fast_init.windows_open() == 2
        assert fast_init.windows_open() == 1 and fast_init.skipping()
    assert _patched() == [] and not fast_init.skipping()
    assert torch.Tensor.normal_ is torch._C.TensorBase.normal_


def test_everything_is_restored_after_an_exception() -> None:
    assert gc.isenabled()
    with pytest.raises(KeyError):
        with meta_device_scope():
            assert not gc.isenabled() and fast_init.skipping()
            raise KeyError("boom")
    assert _patched() == [] and fast_init.windows_open() == 0 and gc.isenabled()
    assert torch.get_default_device() == torch.device("cpu")


def test_decorator_form() -> None:
    @skip_weight_init()
    def build() -> nn.Linear:
        return nn.Linear(4, 4, device="meta")

    assert build().weight._version == 0 and _patched() == []


def test_a_patch_someone_else_put_over_ours_is_left_in_place() -> None:
    def theirs(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self

    with skip_weight_init():
        torch.Tensor.zero_ = theirs  # type: ignore[method-assign]
    try:
        assert torch.Tensor.__dict__["zero_"] is theirs
        assert "Tensor.normal_" not in _patched()
    finally:
        del torch.Tensor.zero_


def test_other_threads_are_not_affected_by_an_open_window() -> None:
    entered, release = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def hold_window() -> None:
        try:
            with skip_weight_init():
                entered.set()
                release.wait(10)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    holder = threading.Thread(target=hold_window)
    holder.start()
    try:
        assert entered.wait(10)
        assert _patched() != [] and not fast_init.skipping()  # installed, but not for this thread
        layer = nn.Linear(4, 4, device="meta")
        tensor = _meta(3)
        tensor.normal_()
        assert layer.weight._version == 1 and tensor._version == 1  # written as without hybridload
        torch.manual_seed(1)
        real = nn.Linear(4, 4)
        torch.manual_seed(1)
        assert torch.equal(real.weight, nn.init.kaiming_uniform_(torch.empty(4, 4), a=5 ** 0.5))
    finally:
        release.set()
        holder.join(10)
    assert not failures and _patched() == []


def test_windows_in_many_threads_at_once() -> None:
    barrier = threading.Barrier(6)
    results: dict[int, tuple[int, int]] = {}
    failures: list[BaseException] = []

    def work(index: int) -> None:
        try:
            barrier.wait(10)
            for _ in range(20):
                if index % 2:
                    with meta_device_scope():
                        skipped = nn.Linear(4, 4).weight._version
                else:
                    skipped = -1
                with torch.device("meta"):
                    written = nn.Linear(4, 4).weight._version
                results[index] = (skipped, written)
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures
    assert results == {i: ((0 if i % 2 else -1), 1) for i in range(6)}
    assert _patched() == [] and fast_init.windows_open() == 0


# --------------------------------------------------------------------------------------------------
# the paused collector
# --------------------------------------------------------------------------------------------------


def test_the_collector_is_paused_and_resumed() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert gc_pause.windows_open() == 2
        assert not gc.isenabled()
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_collector_disabled_before_stays_disabled() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_objects_built_meanwhile_are_in_the_oldest_generation_and_collectable() -> None:
    import weakref

    class Node:
        pass

    gc.collect()
    with collector_paused():
        kept = [Node() for _ in range(2000)]
        garbage = Node()
        garbage.self = garbage  # a cycle only the collector frees
        ref = weakref.ref(garbage)
        del garbage
    assert gc.get_count()[0] < 700  # no young backlog left to scan
    assert ref() is not None  # not collected yet ...
    assert any(obj is kept[0] for obj in gc.get_objects(generation=2))
    gc.collect()
    assert ref() is None  # ... but nothing is exempt from collection
    assert gc.get_freeze_count() == 0


def test_objects_a_program_froze_stay_frozen() -> None:
    gc.collect()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with collector_paused():
            [object() for _ in range(10)]
        assert gc.get_freeze_count() == frozen and gc.isenabled()
    finally:
        gc.unfreeze()


def test_fast_build_pauses_the_collector_only_on_meta() -> None:
    from accelerate import init_empty_weights

    with fast_build():
        assert gc.isenabled() and fast_init.skipping() and not building_on_meta()
    with torch.device("meta"), fast_build():
        assert not gc.isenabled()
    with init_empty_weights(), fast_build():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_tensor_subclass_sees_its_writes() -> None:
    class Tracked(torch.Tensor):
        writes: list[str] = []

        @classmethod
        def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            cls.writes.append(getattr(func, "__name__", ""))
            return super().__torch_function__(func, types, args, kwargs)

    tracked = _meta(3).as_subclass(Tracked)
    with skip_weight_init():
        tracked.normal_()
        tracked.zero_()
    assert Tracked.writes.count("normal_") == 1 and Tracked.writes.count("zero_") == 1
