"""stream_load onto CUDA devices: same bits and placement as from_pretrained with the same device_map."""
from __future__ import annotations

import threading

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from hybridload.serve.streaming import stream_load

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("device_map", ["cuda", "auto", 0])
@pytest.mark.parametrize("model_type", ["qwen2_moe", "nemotron_h"])
def test_single_gpu_bit_identical(kit, moe_checkpoints, model_type: str, device_map) -> None:
    folder = moe_checkpoints(model_type)
    expected = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, device_map=device_map)
    loaded = stream_load(kit.build_meta(AutoConfig.from_pretrained(folder), torch.bfloat16), folder, device_map=device_map)
    kit.assert_bit_identical(expected, loaded)
    assert {t.device.type for t in kit.all_tensors(loaded).values()} == {"cuda"}


def test_split_device_map_dispatches_like_from_pretrained(kit, moe_checkpoints) -> None:
    """GPU + CPU: accelerate offloads the CPU part behind hooks, exactly as from_pretrained's dispatch does."""
    from accelerate.utils.modeling import get_state_dict_offloaded_model

    folder = moe_checkpoints("qwen2_moe")
    device_map = {
        "model.embed_tokens": "cpu",
        "model.layers.0": 0,
        "model.layers.1": "cpu",
        "model.norm": 0,
        "model.rotary_emb": 0,
        "lm_head": 0,
    }
    expected = AutoModelForCausalLM.from_pretrained(folder, device_map=device_map)
    loaded = stream_load(kit.build_meta(AutoConfig.from_pretrained(folder)), folder, device_map=device_map)

    assert loaded.hf_device_map == expected.hf_device_map
    placement = {name: t.device.type for name, t in kit.all_tensors(loaded).items()}
    assert placement == {name: t.device.type for name, t in kit.all_tensors(expected).items()}
    assert placement["model.layers.0.mlp.experts.gate_up_proj"] == "cuda"
    assert hasattr(loaded.model.layers[1], "_hf_hook")  # the offloaded layer is onloaded by its hook
    want, got = get_state_dict_offloaded_model(expected), get_state_dict_offloaded_model(loaded)
    assert sorted(got) == sorted(want)
    assert [k for k in want if not torch.equal(want[k], got[k])] == []
    ids = torch.randint(0, loaded.config.vocab_size, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids.cuda()).logits, expected(ids.cuda()).logits)


def test_failure_mid_stream_frees_the_gpu(kit, moe_checkpoints, monkeypatch) -> None:
    import gc

    from hybridload.errors import CheckpointError
    from hybridload.serve.streaming import checkpoint as stream_checkpoint

    folder = moe_checkpoints("qwen2_moe")
    model = kit.build_meta(AutoConfig.from_pretrained(folder))
    real_read, reads, lock = stream_checkpoint.CheckpointReader.read_into, [], threading.Lock()

    def failing_read(self, key, out):
        with lock:  # reads run on the worker threads
            reads.append(key)
            fail = len(reads) == 12
        if fail:
            raise CheckpointError(f"simulated read failure at {key}")
        return real_read(self, key, out)

    monkeypatch.setattr(stream_checkpoint.CheckpointReader, "read_into", failing_read)
    gc.collect()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    with pytest.raises(CheckpointError, match="simulated"):
        stream_load(model, folder, device_map="cuda")
    gc.collect()
    kit.assert_all_meta(model)
    assert torch.cuda.memory_allocated() <= before  # nothing the failed load placed stays allocated
