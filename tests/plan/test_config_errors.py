"""Malformed repos fail with typed errors that name the file, the field and the fix (no deep tracebacks)."""
from __future__ import annotations

import pytest

import hybridload
from hybridload.errors import ConfigError, PlanError, RemoteCodeError
from hybridload.plan.validate import explain_config_failure, validate_layer_patterns


def test_invalid_json_names_the_file_and_position(build):
    folder = build.llama()
    (folder / "config.json").write_text('{"model_type": "llama",\n  "vocab_size": 64,,\n}')
    with pytest.raises(ConfigError) as info:
        hybridload.resolve(folder)
    message = str(info.value)
    assert str(folder / "config.json") in message and "line 2" in message and "not valid JSON" in message


def test_non_object_config_is_rejected(build):
    folder = build.llama()
    (folder / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        hybridload.resolve(folder)


def test_missing_config_json(build):
    folder = build.llama()
    (folder / "config.json").unlink()
    with pytest.raises(ConfigError, match="no config.json"):
        hybridload.resolve(folder)


def test_missing_model_type_names_the_file_and_fix(build, delete_marker):
    folder = build.llama()
    build.edit_config(folder, model_type=delete_marker)
    with pytest.raises(ConfigError) as info:
        hybridload.resolve(folder)
    assert "config.json" in str(info.value) and '"model_type"' in str(info.value)


def test_unknown_model_type_without_remote_code(build):
    folder = build.llama()
    build.edit_config(folder, model_type="no_such_arch")
    with pytest.raises(ConfigError, match="'no_such_arch' is not known to transformers"):
        hybridload.resolve(folder)


def test_unknown_auto_map_target_names_the_file_and_class(build):
    folder = build.hybrid(weights=None)
    build.edit_config(folder, auto_map={"AutoConfig": "configuration_nemotron_h.NemotronHConfig",
                                        "AutoModelForCausalLM": "modeling_nemotron_h.NoSuchModel"})
    with pytest.raises(RemoteCodeError) as info:
        hybridload.resolve(folder, trust_remote_code=True)
    message = str(info.value)
    assert "modeling_nemotron_h.py" in message and "NoSuchModel" in message and "NemotronHForCausalLM" in message
    assert not build.remote_code_ran(), "the check reads the file, it does not import it"


def test_missing_code_file_names_the_file(build):
    folder = build.hybrid(weights=None)
    build.edit_config(folder, auto_map={"AutoModelForCausalLM": "modeling_gone.GoneForCausalLM"})
    with pytest.raises(RemoteCodeError, match="modeling_gone.py"):
        hybridload.resolve(folder, trust_remote_code=True)


def test_missing_relative_import_names_the_file(build):
    folder = build.hybrid(weights=None)
    (folder / "configuration_nemotron_h.py").unlink()
    build.edit_config(folder, auto_map={"AutoModelForCausalLM": "modeling_nemotron_h.NemotronHForCausalLM"})
    with pytest.raises(RemoteCodeError) as info:
        hybridload.resolve(folder, trust_remote_code=True)
    assert "configuration_nemotron_h.py" in str(info.value) and "missing" in str(info.value)


@pytest.mark.parametrize("ref", ["modeling_nemotron_h", "a.b.C", 42])
def test_malformed_auto_map_reference(build, ref):
    folder = build.hybrid(weights=None)
    build.edit_config(folder, auto_map={"AutoModelForCausalLM": ref})
    with pytest.raises(RemoteCodeError, match="AutoModelForCausalLM"):
        hybridload.resolve(folder, trust_remote_code=True)


def test_auto_map_must_be_an_object(build):
    folder = build.hybrid(weights=None)
    build.edit_config(folder, auto_map=["modeling_nemotron_h.NemotronHForCausalLM"])
    with pytest.raises(ConfigError, match="'auto_map' must be an object"):
        hybridload.resolve(folder)


@pytest.mark.parametrize("trusted", [True, False])
def test_bad_pattern_character_is_named(build, trusted):
    folder = build.hybrid(weights=None)
    build.edit_config(folder, hybrid_override_pattern="M*X")
    with pytest.raises(ConfigError) as info:
        hybridload.resolve(folder, trust_remote_code=trusted)
    message = str(info.value)
    assert "'X'" in message and "position 2" in message and "hybrid_override_pattern" in message
    assert "'-' (mlp)" in message  # the allowed set is spelled out


def test_pattern_length_must_match_layer_count(build):
    folder = build.hybrid(weights=None)
    build.edit_config(folder, num_hidden_layers=4)
    with pytest.raises(ConfigError, match="has 3 characters .* but num_hidden_layers is 4"):
        hybridload.resolve(folder)


@pytest.mark.parametrize("key", ["layers_block_type", "layer_types"])
def test_list_patterns_must_match_layer_count(key):
    with pytest.raises(ConfigError, match=f"'{key}' lists 2 layers but num_hidden_layers is 3"):
        validate_layer_patterns({"num_hidden_layers": 3, key: ["mamba", "attention"]}, "config.json")
    with pytest.raises(ConfigError, match="list of non-empty strings"):
        validate_layer_patterns({"num_hidden_layers": 1, key: "mamba"}, "config.json")
    validate_layer_patterns({"num_hidden_layers": 2, key: ["mamba", "attention"]}, "config.json")


def test_native_parse_failure_names_the_field_and_the_remote_fix(build):
    folder = build.hybrid(weights=None)
    build.edit_config(folder, layers_block_type=["mamba2_ssd", "mlp", "full_attention"])
    with pytest.raises(ConfigError) as info:
        hybridload.resolve(folder)  # untrusted: the native NemotronHConfig must parse it
    message = str(info.value)
    assert "layers_block_type" in message and "NemotronHConfig cannot parse" in message
    assert "configuration_nemotron_h.NemotronHConfig" in message and "trust_remote_code=True" in message
    # the remote config class accepts the field, so trusting it is a real fix
    plan = hybridload.resolve(folder, trust_remote_code=True)
    assert plan.config_class_source == "remote"


def test_keyerror_from_a_native_class_is_traced_to_its_field():
    config = {"model_type": "nemotron_h", "hybrid_override_pattern": "M-M*", "num_hidden_layers": 4}
    error = explain_config_failure(KeyError("-"), config, "org/x@abc:config.json", "NemotronHConfig",
                                   "configuration_nemotron_h.NemotronHConfig", trusted=False)
    assert isinstance(error, ConfigError)
    assert "'hybrid_override_pattern'" in str(error) and "unknown value '-'" in str(error)
    assert "trust_remote_code=True" in str(error)


def test_bad_inputs_to_resolve(build, tmp_path):
    folder = build.llama()
    with pytest.raises(PlanError, match="no revisions"):
        hybridload.resolve(folder, revision="main")
    with pytest.raises(PlanError, match="neither an existing local folder"):
        hybridload.resolve(str(tmp_path / "does-not-exist"))
    with pytest.raises(PlanError, match="not a valid Hub repo id"):
        hybridload.resolve("org/bad name!")
    with pytest.raises(PlanError, match="token= is not a plan decision"):
        hybridload.resolve(folder, token="hf_secret")
    with pytest.raises(PlanError, match="not a plan decision"):
        hybridload.resolve(folder, device_map="auto")
    with pytest.raises(PlanError, match="use dtype="):
        hybridload.resolve(folder, torch_dtype="float16")
    with pytest.raises(PlanError, match="JSON-serializable"):
        hybridload.resolve(folder, some_override=object())
    with pytest.raises(PlanError, match="not a torch dtype"):
        hybridload.resolve(folder, dtype="float17")
    with pytest.raises(PlanError, match="not a transformers AutoModel class"):
        hybridload.resolve(folder, auto_class="AutoTokenizer")
    with pytest.raises(PlanError, match="AutoModelForSpeechSeq2Seq cannot build"):
        hybridload.resolve(folder, auto_class="AutoModelForSpeechSeq2Seq")


def test_remote_code_that_fails_to_import_is_a_typed_error(build):
    folder = build.hybrid(weights=None)
    with open(folder / "modeling_nemotron_h.py", "a") as handle:
        handle.write("\nraise RuntimeError('this checkpoint is broken')\n")
    with pytest.raises(RemoteCodeError) as info:
        hybridload.resolve(folder, trust_remote_code=True)
    assert "modeling_nemotron_h.NemotronHForCausalLM" in str(info.value) and "this checkpoint is broken" in str(info.value)


def test_remote_code_needing_a_missing_non_kernel_package_names_it(build):
    folder = build.hybrid(weights=None)
    source = (folder / "modeling_nemotron_h.py").read_text()
    (folder / "modeling_nemotron_h.py").write_text("import hl_package_that_is_not_installed\n" + source)
    with pytest.raises(RemoteCodeError, match="hl_package_that_is_not_installed"):
        hybridload.resolve(folder, trust_remote_code=True)
