"""Real remote-code patterns hybridload must build, or explain, instead of refusing them itself.

* an attention value the model's own code handles (``"flex"`` from config.json) is passed on and recorded;
* a CPU constant made the legacy way combined with meta tensors names the remote line, and the opt-in
  materialises it on meta;
* a hard-coded ``device="cuda"`` in ``__init__`` builds on meta, recorded in the report;
* an ``auto_map`` entry that points at another repository, unused by the build, is recorded, not validated;
* an import error of a package that is installed but fails to import names the real failure.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

import hybridload
from hybridload.errors import RemoteCodeError, ValueDependentInitError


def _write(folder: Path, config: dict, modeling: str, *, model_type: str) -> Path:
    folder.mkdir(parents=True)
    stem = model_type.replace("hl_", "")
    (folder / "config.json").write_text(json.dumps({
        "model_type": model_type, "vocab_size": 16, "hidden_size": 8,
        "auto_map": {"AutoConfig": f"configuration_{stem}.PatternConfig",
                     "AutoModelForCausalLM": f"modeling_{stem}.PatternForCausalLM"},
        **config,
    }))
    (folder / f"configuration_{stem}.py").write_text(textwrap.dedent(f'''
        from transformers import PretrainedConfig

        class PatternConfig(PretrainedConfig):
            model_type = "{model_type}"

            def __init__(self, vocab_size=16, hidden_size=8, **kwargs):
                self.vocab_size, self.hidden_size = vocab_size, hidden_size
                super().__init__(**kwargs)
    '''))
    (folder / f"modeling_{stem}.py").write_text(textwrap.dedent(f'''
        import torch
        from torch import nn
        from transformers import PreTrainedModel

        from .configuration_{stem} import PatternConfig
    ''') + textwrap.dedent(modeling))
    return folder


FLEX = '''
class FlexAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.block_mask_proj = nn.Linear(config.hidden_size, config.hidden_size)


class SdpaAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)


class PatternForCausalLM(PreTrainedModel):
    config_class = PatternConfig
    _supports_sdpa = True

    def get_correct_attn_implementation(self, requested, is_init_check=False):
        if requested == "flex":  # this family's own flex-attention class, not transformers' dispatch
            return "flex"
        return super().get_correct_attn_implementation(requested, is_init_check)

    def __init__(self, config):
        super().__init__(config)
        self.attn = FlexAttention(config) if config._attn_implementation == "flex" else SdpaAttention(config)
        self.post_init()
'''


def _random_weights(folder: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})


def test_an_attention_value_the_model_handles_itself_is_passed_on_and_recorded(tmp_path):
    folder = _write(tmp_path / "flexish", {"attn_implementation": "flex"}, FLEX, model_type="hl_flexish")
    _random_weights(folder)
    plan = hybridload.resolve(folder, trust_remote_code=True)
    assert (plan.attn_implementation, plan.attn_implementation_built) == ("flex", "flex")
    assert "from config.json" in plan.attn_note and "unvalidated" in plan.attn_note
    meta = hybridload.load_meta(plan)
    assert type(meta.attn).__name__ == "FlexAttention"
    served = hybridload.dispatch(plan, verify_tree=True)  # the server takes the same branch
    assert type(served.attn).__name__ == "FlexAttention"


LEGACY_CONSTANT = '''
class PatternForCausalLM(PreTrainedModel):
    config_class = PatternConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        scales = torch.Tensor([0.5] * config.hidden_size)  # the legacy constructor ignores the default device
        self.register_buffer("scaled_bias", self.proj.bias * scales)
        self.post_init()
'''


def test_a_legacy_cpu_constant_names_the_line_and_the_opt_in_builds_it(tmp_path, monkeypatch):
    folder = _write(tmp_path / "legacy", {}, LEGACY_CONSTANT, model_type="hl_legacy")
    plan = hybridload.resolve(folder, trust_remote_code=True)
    with pytest.raises(ValueDependentInitError, match=r"modeling_legacy\.py:\d+") as info:
        hybridload.load_meta(plan)
    assert "HYBRIDLOAD_CPU_SCALARS=1" in str(info.value) and "CPU tensor with meta tensors" in str(info.value)
    monkeypatch.setenv("HYBRIDLOAD_CPU_SCALARS", "1")
    meta = hybridload.load_meta(plan)
    assert meta.scaled_bias.device.type == "meta" and tuple(meta.scaled_bias.shape) == (8,)
    assert any("CPU constant combined with meta tensors" in line for line in meta.hybridload_build_report.compat.value_reads)


HARD_CODED_CUDA = '''
class PatternForCausalLM(PreTrainedModel):
    config_class = PatternConfig

    def __init__(self, config):
        super().__init__(config)
        device = torch.device("cuda")
        self.proj = nn.Linear(config.hidden_size, config.hidden_size, device=device)
        self.register_buffer("mask", torch.ones(4, 4, device=device).tril())
        self.register_buffer("steps", torch.arange(4).cuda())
        self.post_init()
'''


def test_hard_coded_cuda_placement_goes_to_meta_and_is_recorded(tmp_path):
    folder = _write(tmp_path / "cudaish", {}, HARD_CODED_CUDA, model_type="hl_cudaish")
    meta = hybridload.load_meta(hybridload.resolve(folder, trust_remote_code=True))
    assert {t.device.type for t in [*meta.parameters(), *meta.buffers()]} == {"meta"}
    redirects = meta.hybridload_build_report.cuda_redirects
    assert len(redirects) == 3 and all("modeling_cudaish.py:" in line for line in redirects)
    assert any("Tensor.cuda" in line for line in redirects)


PLAIN = '''
class PatternForCausalLM(PreTrainedModel):
    config_class = PatternConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.post_init()
'''


@pytest.mark.parametrize("tokenizer_entry", ["org/other-repo", ["org/other-repo", None], [None, None]])
def test_an_auto_map_entry_the_build_does_not_use_is_recorded_not_validated(tmp_path, tokenizer_entry):
    folder = _write(tmp_path / "elsewhere", {}, PLAIN, model_type="hl_elsewhere")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"]["AutoTokenizer"] = tokenizer_entry
    config["auto_map"]["AutoModelForSequenceClassification"] = "org/another--modeling_x.X"
    (folder / "config.json").write_text(json.dumps(config))
    plan = hybridload.resolve(folder, trust_remote_code=True)
    assert plan.auto_map_unused["AutoTokenizer"] == tokenizer_entry
    assert "AutoModelForSequenceClassification" in plan.auto_map_unused
    assert hybridload.load_meta(plan).proj.in_features == 8


BROKEN_DEPENDENCY = '''
import hl_vision_library  # installed, but its own import needs a package this machine cannot provide


class PatternForCausalLM(PreTrainedModel):
    config_class = PatternConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.post_init()
'''


def test_an_installed_package_that_fails_to_import_is_named_with_its_cause(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "hl_vision_library").mkdir(parents=True)
    (site / "hl_vision_library" / "__init__.py").write_text("import hl_gpu_only_operators\n")
    monkeypatch.syspath_prepend(str(site))
    folder = _write(tmp_path / "vision", {}, BROKEN_DEPENDENCY, model_type="hl_vision")
    with pytest.raises(RemoteCodeError) as info:
        hybridload.resolve(folder, trust_remote_code=True)
    message = str(info.value)
    assert "hl_vision_library is installed but fails to import" in message
    assert "hl_gpu_only_operators" in message and "pip install hl_vision_library" not in message
