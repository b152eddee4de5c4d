"""stream_load of fused-MoE models from per-expert, sharded checkpoints is bit-identical to from_pretrained."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from hybridload.serve.streaming import plan_stream, stream_load

MODEL_TYPES = ["deepseek_v3", "mixtral", "nemotron_h", "qwen2_moe"]  # Nemotron-H: the hybrid fixture


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_bit_identical_to_from_pretrained(kit, moe_checkpoints, model_type: str, dtype: torch.dtype) -> None:
    folder = moe_checkpoints(model_type)
    expected = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    model = kit.build_meta(AutoConfig.from_pretrained(folder), dtype)

    loaded = stream_load(model, folder)

    assert loaded is model
    kit.assert_bit_identical(expected, loaded)
    for suffix in kit.MOE_MODELS[model_type][2]:  # the fused 3-D parameters really came from per-expert keys
        fused = [name for name, p in loaded.named_parameters() if name.endswith(suffix)]
        assert fused and all(loaded.get_parameter(name).dim() == 3 for name in fused)
    ids = torch.randint(0, loaded.config.vocab_size, (1, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # same bits in, but CPU kernels may pick other SIMD paths for other alignments
        torch.testing.assert_close(loaded(ids).logits, expected(ids).logits, rtol=1e-5, atol=1e-5)


def test_tied_embeddings_are_tied_like_from_pretrained(kit, moe_checkpoints) -> None:
    folder = moe_checkpoints("mixtral")  # tie_word_embeddings=True: the checkpoint has no lm_head
    assert not any(key.startswith("lm_head") for key in kit.checkpoint_keys(folder))
    expected = AutoModelForCausalLM.from_pretrained(folder)
    loaded = stream_load(kit.build_meta(AutoConfig.from_pretrained(folder)), folder)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    kit.assert_bit_identical(expected, loaded)


def test_dtype_argument_retargets_a_float32_meta_build(kit, moe_checkpoints) -> None:
    # deepseek_v3 keeps e_score_correction_bias in fp32 (_keep_in_fp32_modules_strict): it must stay fp32
    folder = moe_checkpoints("deepseek_v3")
    expected = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    loaded = stream_load(kit.build_meta(AutoConfig.from_pretrained(folder), torch.float32), folder, dtype="bfloat16")
    kit.assert_bit_identical(expected, loaded)
    assert loaded.get_buffer("model.layers.1.mlp.gate.e_score_correction_bias").dtype == torch.float32
    assert loaded.config.dtype == torch.bfloat16


@pytest.mark.parametrize("builder", ["from_config_on_meta", "accelerate_init_empty_weights"])
def test_meta_builds_made_by_from_config(kit, moe_checkpoints, builder: str) -> None:
    """from_config runs weight init during the build (init_empty_weights keeps buffers real and marks
    modules initialised); the load must still recompute what from_pretrained recomputes."""
    from accelerate import init_empty_weights

    folder = moe_checkpoints("qwen2_moe")
    config = AutoConfig.from_pretrained(folder)
    context = torch.device("meta") if builder == "from_config_on_meta" else init_empty_weights()
    with context:
        model = AutoModelForCausalLM.from_config(config)
    loaded = stream_load(model, folder)
    kit.assert_bit_identical(AutoModelForCausalLM.from_pretrained(folder), loaded)


def test_key_mapping_renames_before_the_model_conversions(kit, moe_checkpoints, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = moe_checkpoints("qwen2_moe")
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    (renamed / "config.json").write_text((folder / "config.json").read_text())
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(kit.checkpoint_keys(folder).values())):
        state.update(load_file(folder / shard))
    save_file({key.replace("model.layers.", "transformer.h."): t for key, t in state.items()}, renamed / "model.safetensors")
    key_mapping = {r"^transformer\.h\.": "model.layers."}

    expected = AutoModelForCausalLM.from_pretrained(renamed, key_mapping=key_mapping)
    loaded = stream_load(kit.build_meta(AutoConfig.from_pretrained(renamed)), renamed, key_mapping=key_mapping)
    kit.assert_bit_identical(expected, loaded)


def test_save_pretrained_after_stream_load_writes_the_original_layout(kit, moe_checkpoints, tmp_path: Path) -> None:
    """The conversions used are recorded like from_pretrained records them, so saving reverts them."""
    folder = moe_checkpoints("nemotron_h")
    loaded = stream_load(kit.build_meta(AutoConfig.from_pretrained(folder)), folder)
    loaded.save_pretrained(tmp_path / "resaved")
    assert sorted(kit.checkpoint_keys(tmp_path / "resaved")) == sorted(kit.checkpoint_keys(folder))


def test_plan_reports_groups_and_the_largest_converted_group(kit, moe_checkpoints) -> None:
    folder = moe_checkpoints("mixtral")
    config = AutoConfig.from_pretrained(folder)
    plan = plan_stream(kit.build_meta(config), folder)
    fused = 2 * config.num_local_experts * config.intermediate_size * config.hidden_size * 4  # gate_up, fp32
    assert plan.largest_group_bytes == max(fused, config.vocab_size * config.hidden_size * 4)
    assert plan.converted_groups == 2 * config.num_hidden_layers  # gate_up_proj + down_proj per layer
    assert plan.total_bytes == sum(p.numel() * 4 for p in kit.build_meta(config).state_dict().values()) - (
        config.vocab_size * config.hidden_size * 4  # tied lm_head is not read
    )


def test_single_file_checkpoint(kit, tmp_path: Path) -> None:
    config = kit.make_config("qwen2_moe")
    folder = kit.write_checkpoint(config, tmp_path / "single", shard_size="1GB")
    assert (folder / "model.safetensors").is_file() and not (folder / "model.safetensors.index.json").exists()
    loaded = stream_load(kit.build_meta(AutoConfig.from_pretrained(folder)), folder)
    kit.assert_bit_identical(AutoModelForCausalLM.from_pretrained(folder), loaded)


def test_concurrent_loads_into_separate_models(kit, moe_checkpoints) -> None:
    folders = [moe_checkpoints("qwen2_moe"), moe_checkpoints("deepseek_v3")]
    models = [kit.build_meta(AutoConfig.from_pretrained(f)) for f in folders]
    errors: list[BaseException] = []

    def load(model, folder) -> None:
        try:
            stream_load(model, folder)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=load, args=pair) for pair in zip(models, folders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for model, folder in zip(models, folders):
        kit.assert_bit_identical(AutoModelForCausalLM.from_pretrained(folder), model)



def test_allowed_missing_keys_are_initialised_like_from_pretrained(kit, moe_checkpoints, checkpoint_copy, monkeypatch) -> None:
    """A key the model declares may be missing (_keys_to_ignore_on_load_missing) gets transformers' init."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    folder = checkpoint_copy(moe_checkpoints("qwen2_moe"))
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    key = "model.layers.1.post_attention_layernorm.weight"
    shard = index["weight_map"].pop(key)
    with safe_open(str(folder / shard), "pt") as fh:
        save_file({k: fh.get_tensor(k) for k in fh.keys() if k != key}, folder / shard, metadata={"format": "pt"})
    index_path.write_text(json.dumps(index))
    config = AutoConfig.from_pretrained(folder)
    monkeypatch.setattr(kit.model_class(config), "_keys_to_ignore_on_load_missing", [r"post_attention_layernorm"])

    loaded = stream_load(kit.build_meta(config), folder)
    kit.assert_bit_identical(AutoModelForCausalLM.from_pretrained(folder), loaded)
    assert torch.equal(loaded.get_parameter(key), torch.ones(config.hidden_size))  # RMSNorm init


def test_buffer_init_does_not_recompute_keeps_the_built_value(kit, moe_checkpoints, monkeypatch) -> None:
    """If _init_weights skips a non-persistent buffer, a build that computed it (buffers kept real) is used."""
    from accelerate import init_empty_weights

    folder = moe_checkpoints("qwen2_moe")
    config = AutoConfig.from_pretrained(folder)
    with init_empty_weights(include_buffers=False):
        model = kit.model_class(config)(config)
    built = model.model.rotary_emb.inv_freq.clone()
    cls = next(c for c in kit.model_class(config).__mro__ if "_init_weights" in vars(c))  # shared by sub-models
    real_init = cls._init_weights
    monkeypatch.setattr(cls, "_init_weights", lambda self, m: None if "Rotary" in type(m).__name__ else real_init(self, m))

    loaded = stream_load(model, folder)
    assert torch.equal(loaded.model.rotary_emb.inv_freq, built)


@pytest.mark.parametrize(
    "model_type, config, checkpoint_key",
    [
        ("llama", dict(num_key_value_heads=1), "model.layers.1.mlp.gate_proj.weight"),  # no conversion at all
        ("gpt_neox", dict(tie_word_embeddings=False), "embed_out.weight"),  # class-scoped rename -> lm_head
    ],
)
def test_dense_models_and_class_scoped_renames(kit, tmp_path: Path, model_type: str, config: dict, checkpoint_key: str) -> None:
    base = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=64)
    model_config = AutoConfig.for_model(model_type, **base, **config)
    folder = kit.write_checkpoint(model_config, tmp_path / model_type)
    assert checkpoint_key in kit.checkpoint_keys(folder)
    loaded = stream_load(kit.build_meta(AutoConfig.from_pretrained(folder)), folder)
    kit.assert_bit_identical(AutoModelForCausalLM.from_pretrained(folder), loaded)


@pytest.mark.parametrize(
    "device_map",
    ["cpu", torch.device("cpu"), "auto", {"model.embed_tokens": "cpu", "model": "cpu", "lm_head": "cpu"}],
    ids=["str", "torch.device", "auto", "prefix-dict"],
)
def test_cpu_device_maps(kit, moe_checkpoints, device_map) -> None:
    """Same placement as from_pretrained given the same map ("auto" means the GPU where there is one)."""
    folder = moe_checkpoints("qwen2_moe")
    loaded = stream_load(kit.build_meta(AutoConfig.from_pretrained(folder)), folder, device_map=device_map)
    kit.assert_bit_identical(AutoModelForCausalLM.from_pretrained(folder, device_map=device_map), loaded)
    assert not hasattr(loaded.model.layers[0], "_hf_hook")  # one device: no dispatch hooks
