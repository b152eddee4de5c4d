"""Skipping initialisation on meta builds the identical tree; real-device builds are initialised as before.

"Identical" is checked beyond the signature digest: every module, parameter and buffer path with class,
shape, dtype, device, requires_grad, persistence and transformers' ``_is_hf_initialized`` flags, and the
values of every tensor that is not on meta (buffers computed on CPU in ``__init__``).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

import hybridload
from build_fixtures import (
    TINY_DEEPSEEK,
    TINY_KIMI,
    TINY_NEMOTRON,
    benchmark_standins,
    real_values,
    tree_facts,
    write_init_zoo,
    write_scalar_layers,
)
from hybridload.build.fast_init import skip_weight_init
from hybridload.build.fast_build import fast_build, meta_device_scope


def _config(folder: Path) -> Any:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder, trust_remote_code=True)


def _from_config(config: Any, auto: str = "AutoModelForCausalLM") -> Any:
    import transformers

    return getattr(transformers, auto).from_config(config, trust_remote_code=True)


@contextlib.contextmanager
def _plain() -> Any:
    """transformers exactly as without hybridload's integration (no window, no fast layer)."""
    hybridload.uninstall()
    try:
        yield
    finally:
        hybridload.install()


def _device(how: str) -> Any:
    if how == "meta":
        return torch.device("meta")
    from accelerate import init_empty_weights

    return init_empty_weights()


def _written(model: Any) -> set[str]:
    """Meta parameters something wrote into (in-place writes bump a tensor's version counter)."""
    return {name for name, p in model.named_parameters() if p.is_meta and p._version > 0}


def _zoo_eyes(model: Any) -> set[str]:
    """nn.init.eye_ is ``torch.eye(out=tensor)``: one C call, not an initialiser primitive; it is left alone."""
    return {name for name in _written(model) if name.endswith(".direct.eye")}


def _assert_same_tree(plain: Any, fast: Any) -> None:
    assert hybridload.signature(fast).digest == hybridload.signature(plain).digest
    assert tree_facts(fast) == tree_facts(plain)


# --------------------------------------------------------------------------------------------------
# remote code that initialises in every way it can
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return _config(write_init_zoo(tmp_path_factory.mktemp("zoo") / "init_zoo"))


@pytest.mark.parametrize("how", ["meta", "init_empty_weights"])
def test_init_zoo_tree_is_identical_with_init_skipped(zoo: Any, how: str) -> None:
    with _plain(), _device(how):
        plain = _from_config(zoo)
    with _plain(), _device(how), fast_build():
        fast = _from_config(zoo)
    _assert_same_tree(plain, fast)
    # the structural _init_weights ran (it adds a buffer and a parameter and replaces a bias) ...
    layer = fast.model.layers[0]
    assert "scale" in layer.structural._buffers and "extra" in layer.structural._parameters
    assert tuple(layer.structural.dense.bias.shape) == (zoo.hidden_size + 1,)
    # ... and buffers computed on CPU in __init__ hold their values
    rotary = layer.rotary
    assert rotary.cpu_table.device.type == "cpu" and rotary.cpu_table[0].eq(0).all() and rotary.cpu_table[1:].eq(0.5).all()
    assert torch.equal(layer.direct.cpu_scale, torch.full((zoo.hidden_size,), 2.0))
    generator = torch.Generator().manual_seed(1234)
    assert torch.equal(rotary.cpu_noise, torch.empty(3).normal_(0.0, 1.0, generator=generator))


def test_init_zoo_initialisation_really_is_skipped_on_meta(zoo: Any) -> None:
    """In-place writes bump a tensor's version counter: with the window, no meta tensor was written."""
    with _plain(), torch.device("meta"):
        plain = _from_config(zoo)
    with _plain(), torch.device("meta"), fast_build():
        fast = _from_config(zoo)
    assert "model.layers.0.mlp.experts.0.gate_proj.weight" in _written(plain)  # reset_parameters
    assert "model.layers.0.direct.xavier" in _written(plain)  # nn.init.xavier_normal_ in __init__
    assert len(_written(plain)) > 40
    assert _written(fast) == _zoo_eyes(fast) == {f"model.layers.{i}.direct.eye" for i in range(zoo.num_hidden_layers)}


def test_init_zoo_through_every_hybridload_entry_point(zoo: Any, tmp_path: Path) -> None:
    with _plain(), torch.device("meta"):
        plain = _from_config(zoo)
    with torch.device("meta"):  # the from_config integration (kernel shim + build layers)
        integrated = _from_config(zoo)
    with meta_device_scope():
        scoped = _from_config(zoo)
    for fast in (integrated, scoped):
        _assert_same_tree(plain, fast)
        assert _written(fast) == _zoo_eyes(fast)


def test_load_meta_of_a_plan_skips_initialisation(tmp_path: Path) -> None:
    import transformers

    folder = write_init_zoo(tmp_path / "init_zoo_plan")
    plan = hybridload.resolve(folder, trust_remote_code=True)
    model = hybridload.load_meta(plan)
    with _plain(), torch.device("meta"):
        plain = getattr(transformers, plan.auto_class).from_config(
            _config(folder), trust_remote_code=True, dtype=getattr(torch, plan.dtype),
            attn_implementation=plan.attn_implementation_built,
        )
    assert hybridload.signature(model).digest == hybridload.signature(plain).digest
    assert _written(model) == _zoo_eyes(model) and len(_written(plain)) > 40


@pytest.mark.parametrize("seed", [0, 7])
def test_a_real_device_build_is_initialised_exactly_as_without_the_window(zoo: Any, seed: int) -> None:
    torch.manual_seed(seed)
    with _plain():
        plain = _from_config(zoo)
    torch.manual_seed(seed)
    with fast_build():  # the window, on CPU
        fast = _from_config(zoo)
    plain_values, fast_values = real_values(plain), real_values(fast)
    assert plain_values.keys() == fast_values.keys() and len(plain_values) > 50
    for name, value in plain_values.items():
        assert torch.equal(fast_values[name], value), name
    assert tree_facts(fast) == tree_facts(plain)


def test_real_layers_inside_a_meta_window_are_initialised() -> None:
    torch.manual_seed(3)
    reference = nn.Linear(8, 4), nn.Conv1d(4, 4, 3), nn.LayerNorm(4), nn.Embedding(5, 4, padding_idx=1)
    torch.manual_seed(3)
    with meta_device_scope():
        real = (nn.Linear(8, 4, device="cpu"), nn.Conv1d(4, 4, 3, device="cpu"), nn.LayerNorm(4, device="cpu"),
                nn.Embedding(5, 4, padding_idx=1, device="cpu"))
        meta = nn.Linear(8, 4)
    assert meta.weight.is_meta
    for ref, got in zip(reference, real):
        for (name, a), (_, b) in zip(ref.named_parameters(), got.named_parameters()):
            assert torch.equal(a, b), name


# --------------------------------------------------------------------------------------------------
# CPU shadows (cpu_scalars): values written in __init__ are still read back right
# --------------------------------------------------------------------------------------------------


def test_cpu_scalars_read_values_written_in_init(tmp_path: Path) -> None:
    from hybridload.compat.compat_window import compat_options

    config = _config(write_scalar_layers(tmp_path / "scalar_layers", depth=3))
    with compat_options(cpu_scalars=True):
        with torch.device("meta"):
            integrated = _from_config(config, "AutoModel")
        with meta_device_scope():
            scoped = _from_config(config, "AutoModel")
    assert len(integrated.layers) == len(scoped.layers) == 3
    assert hybridload.signature(integrated).digest == hybridload.signature(scoped).digest


def test_without_cpu_scalars_a_value_read_fails_as_before(tmp_path: Path) -> None:
    from hybridload.errors import ValueDependentInitError

    config = _config(write_scalar_layers(tmp_path / "scalar_layers_off", depth=2))
    with pytest.raises(ValueDependentInitError):
        with meta_device_scope():
            _from_config(config, "AutoModel")


# --------------------------------------------------------------------------------------------------
# the remote code the benchmark times, at tiny widths
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def standins() -> Any:
    return benchmark_standins()


@pytest.mark.parametrize(
    "writer, widths",
    [("write_deepseek_v3", TINY_DEEPSEEK), ("write_kimi_linear", TINY_KIMI), ("write_nemotron_h", TINY_NEMOTRON)],
)
def test_benchmark_standins_build_the_same_tree(standins: Any, tmp_path: Path, writer: str, widths: dict) -> None:
    config = _config(getattr(standins, writer)(tmp_path / writer, **widths))
    with _plain(), hybridload.kernel_shim(), torch.device("meta"):  # the shim alone: hybridload as it was
        plain = _from_config(config)
    with meta_device_scope():
        fast = _from_config(config)
    _assert_same_tree(plain, fast)
    assert _written(fast) == set() and _written(plain)


def test_deepseek_standin_has_the_published_module_count_at_full_width(standins: Any) -> None:
    """Structure only (counted from the config, no build): 61 layers, 3 dense, 256 experts of 3 Linear."""
    c = standins.DEEPSEEK_V3_CONFIG
    moe_layers = c["num_hidden_layers"] - c["first_k_dense_replace"]
    expert = 1 + 3 + 1  # MLP, three Linear, activation
    attention = 1 + 7 + 1  # module, q_a/q_a_norm/q_b/kv_a/kv_a_norm/kv_b/o, rotary
    moe = 1 + 1 + c["n_routed_experts"] * expert + 1 + expert  # block, experts list, experts, gate, shared
    layer = lambda mlp: 1 + 2 + attention + mlp  # noqa: E731 - layer, two norms
    total = 1 + 1 + 1 + 1 + 1 + 1 + moe_layers * layer(moe) + c["first_k_dense_replace"] * layer(expert)
    assert total == 75457


# --------------------------------------------------------------------------------------------------
# native transformers models
# --------------------------------------------------------------------------------------------------

NATIVE = {
    "llama": dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2),
    "qwen3_moe": dict(vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_experts=4,
                      num_experts_per_tok=2),
    "deepseek_v3": dict(vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                        num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
                        n_routed_experts=8, n_group=2, topk_group=1, num_experts_per_tok=2, kv_lora_rank=16,
                        q_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8),
    "nemotron_h": dict(vocab_size=64, hidden_size=32, layers_block_type=["mamba", "moe", "attention", "mlp"],
                       num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=32,
                       mamba_num_heads=4, mamba_head_dim=8, n_groups=2, ssm_state_size=8, n_routed_experts=4,
                       moe_intermediate_size=16, moe_shared_expert_intermediate_size=16, num_experts_per_tok=2),
    "gpt2": dict(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64),  # tied embeddings
}


@pytest.mark.parametrize("how", ["meta", "init_empty_weights"])
@pytest.mark.parametrize("model_type", sorted(NATIVE))
def test_native_tree_is_identical_with_init_skipped(model_type: str, how: str) -> None:
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type, **NATIVE[model_type])
    with _plain(), _device(how):
        plain = _from_config(config)
    with _device(how):
        integrated = _from_config(config)
    with _plain(), _device(how), fast_build():
        fast = _from_config(config)
    _assert_same_tree(plain, integrated)
    _assert_same_tree(plain, fast)
    assert _written(plain)
    if how == "meta":
        assert _written(fast) == _written(integrated) == set()
    else:  # transformers runs _init_weights here; its copy_/in-place arithmetic on meta still runs, cheaply
        assert _written(fast) < _written(plain)


@pytest.mark.parametrize("model_type", ["llama", "qwen3_moe", "gpt2"])
def test_native_real_build_values_are_unchanged(model_type: str) -> None:
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type, **NATIVE[model_type])
    torch.manual_seed(11)
    with _plain():
        plain = _from_config(config)
    torch.manual_seed(11)
    with skip_weight_init():
        fast = _from_config(config)
    for (name, a), (_, b) in zip(plain.state_dict().items(), fast.state_dict().items()):
        assert torch.equal(a, b), name


def test_routes_build_the_same_tree(zoo: Any) -> None:
    """torch.device, set_default_device and nnsight's MetaDevice, each with the window."""
    from nnsight.modeling.mixins.meta import MetaDevice

    def set_default() -> Any:
        @contextlib.contextmanager
        def scope() -> Any:
            torch.set_default_device("meta")
            try:
                yield
            finally:
                torch.set_default_device(None)

        return scope()

    routes: dict[str, Callable[[], Any]] = {
        "device": lambda: torch.device("meta"),
        "set_default_device": set_default,
        "nnsight": MetaDevice,
    }
    for name, route in routes.items():
        with _plain(), route():
            plain = _from_config(zoo)
        with _plain(), route(), fast_build():
            fast = _from_config(zoo)
        _assert_same_tree(plain, fast)
        assert _written(fast) == _zoo_eyes(fast), name
        assert any(p._version > 0 for p in plain.parameters()), name
