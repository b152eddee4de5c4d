"""Value-dependent __init__ on meta: the report without the opt-in, CPU shadows with it."""
from __future__ import annotations

import inspect
import threading

import pytest
import torch
from torch import nn

import hybridload.compat as compat
from hybridload.compat import meta_scalars


class DropPathSchedule(nn.Module):
    """InternViT / VideoMAEv2: a stochastic-depth schedule read with .item() in __init__."""

    def __init__(self, depth: int, rate: float) -> None:
        super().__init__()
        self.rates = [x.item() for x in torch.linspace(0, rate, depth)]  # the value-dependent line
        self.blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(depth))


class XIELU(nn.Module):
    """Apertus' xIELU: buffers whose values are copied to Python floats in __init__."""

    def __init__(self, beta: float = 0.5, eps: float = -1e-6) -> None:
        super().__init__()
        self.alpha_p = nn.Parameter(torch.log(torch.expm1(torch.tensor(0.8))).unsqueeze(0))
        self.register_buffer("beta", torch.tensor(beta))
        self.register_buffer("eps", torch.tensor(eps))
        self._beta_scalar = float(self.beta.detach().cpu().float().item())
        self._eps_scalar = float(self.eps.detach().cpu().float().item())


def _line_of(fragment: str) -> int:
    lines, start = inspect.getsourcelines(DropPathSchedule)
    return start + next(i for i, text in enumerate(lines) if fragment in text)


def test_without_opt_in_the_error_names_file_and_line() -> None:
    with pytest.raises(compat.ValueDependentInitError) as caught:
        with compat.compat_window(cpu_scalars=False), torch.device("meta"):
            DropPathSchedule(4, 0.1)
    assert caught.value.location.startswith(f"{__file__}:{_line_of('x.item()')} ")
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_opt_in_builds_with_real_values_and_meta_parameters() -> None:
    with compat.compat_window(cpu_scalars=True) as record, torch.device("meta"):
        module = DropPathSchedule(4, 0.3)
        act = XIELU()
    assert module.rates == pytest.approx(torch.linspace(0, 0.3, 4).tolist())
    assert act._beta_scalar == pytest.approx(0.5) and act._eps_scalar == pytest.approx(-1e-6)
    assert all(t.device.type == "meta" for t in [*module.parameters(), *act.parameters(), *act.buffers()])
    assert record.fired == ["meta.cpu_scalars"]
    assert any(f"{__file__}:{_line_of('x.item()')} " in line for line in record.value_reads)


def test_opt_in_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("HYBRIDLOAD_CPU_SCALARS", "1")
    with compat.compat_window() as record, torch.device("meta"):
        DropPathSchedule(3, 0.2)
    assert record.cpu_scalars and record.fired == ["meta.cpu_scalars"]


@pytest.mark.parametrize(
    "read",
    [
        lambda t: t.tolist(),
        lambda t: [bool(x > 0.05) for x in t],
        lambda t: [int(x * 10) for x in t],
        lambda t: float(t.sum()),
        lambda t: list(range(10))[t.argmax()],
        lambda t: t.numpy().tolist(),
        lambda t: max(t).item(),
    ],
)
def test_value_reads_follow_ops_on_shadows(read) -> None:
    expected_tensor = torch.linspace(0, 0.2, 5) * 2 + 1
    expected = read(expected_tensor)
    with compat.compat_window(cpu_scalars=True), torch.device("meta"):
        t = torch.linspace(0, 0.2, 5) * 2 + 1
        assert t.device.type == "meta"
        assert read(t) == pytest.approx(expected)


def test_in_place_update_from_a_tensor_without_value_makes_the_value_unknown() -> None:
    with compat.compat_window(cpu_scalars=True), torch.device("meta"):
        small = torch.zeros(3)
        big = torch.empty(meta_scalars.SHADOW_LIMIT + 1)  # too large to shadow: no value
        small.copy_(big[:3])
        with pytest.raises(compat.ValueDependentInitError, match="not derived from small tensors"):
            small.sum().item()
        with pytest.raises(compat.ValueDependentInitError):
            big[0].item()


def test_shadows_follow_in_place_updates_they_can_replay() -> None:
    with compat.compat_window(cpu_scalars=True), torch.device("meta"):
        t = torch.zeros(3)
        t.add_(2)
        t[1] = 5
        assert t.tolist() == [2.0, 5.0, 2.0]


def test_random_shadows_do_not_consume_the_global_rng() -> None:
    torch.manual_seed(0)
    before = torch.get_rng_state()
    with compat.compat_window(cpu_scalars=True), torch.device("meta"):
        value = torch.rand(3).sum().item()
    assert 0.0 <= value <= 3.0
    assert torch.equal(torch.get_rng_state(), before)


def test_the_mode_is_only_active_on_the_window_thread() -> None:
    failures: list[BaseException] = []
    go = threading.Event()
    done = threading.Event()

    def other() -> None:
        go.wait(10)
        try:
            with torch.device("meta"):
                torch.linspace(0, 1, 3)[0].item()
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with compat.compat_window(cpu_scalars=True), torch.device("meta"):
        go.set()
        done.wait(10)
        assert torch.linspace(0, 1, 3)[2].item() == 1.0
    thread.join(10)
    assert len(failures) == 1 and isinstance(failures[0], RuntimeError)
    assert not isinstance(failures[0], compat.ValueDependentInitError)  # no window on that thread


def test_cpu_tensors_are_untouched_by_the_mode() -> None:
    with compat.compat_window(cpu_scalars=True) as record:
        t = torch.arange(4.0)
        assert t.sum().item() == 6.0
    assert record.fired == []
