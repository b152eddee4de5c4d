"""What a newcomer meets first: help texts, readable numbers, captured model messages, safe output files,
JSON errors, and doctor's word on a model whose own code was not used."""
from __future__ import annotations

import argparse
import json
import logging

import pytest

import hybridload
from hybridload import cli


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_help_says_what_check_does_without_a_model_and_lists_exit_codes():
    parser = cli._parser()
    top = " ".join(parser.format_help().split())
    assert "exit codes: 0 ok, 1" in top and "2 usage or load error" in top
    check = " ".join(_subparsers(parser)["check"].format_help().split())
    assert "bundled" in check and "trusted" in check and "reference signature" in check
    assert "exit codes" in check


def test_every_argument_has_help_text():
    for name, sub in _subparsers(cli._parser()).items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"


def test_numbers_read_as_a_person_writes_them():
    assert cli.human(7.2e9) == "7.2B" and cli.human(671e9) == "671.0B" and cli.human(1234) == "1.2K"
    assert cli.human(2.5e9, "B") == "2.5GB"  # bytes keep G
    kinds = ["mamba", "moe"] * 3 + ["attention"] * 20 + ["mlp"]
    folded = cli.fold_runs(kinds)
    assert "attention x20" in folded and "(27 layers)" in folded and len(folded) < 120
    assert cli.fold_runs(["mamba", "moe"]) == "mamba moe"


def test_one_symbol_is_singular():
    from hybridload.shim.kernel_shim import ShimReport

    report = ShimReport(stand_ins={"mamba_ssm": ["mamba_ssm.x"]}, modules={"mamba_ssm": ["mamba_ssm"]},
                        reasons={"mamba_ssm": "not installed"})
    assert report.summary() == "stood in for: mamba_ssm (not installed; 1 symbol)"


def test_the_models_own_advice_is_captured_not_printed(capsys, caplog):
    import transformers.utils.logging as hf_logging

    caplog.set_level(logging.WARNING)
    hf_logging.warning_once.cache_clear()  # the model logs it once per process: make this build the first
    plan = hybridload.resolve(str(hybridload.examples.path("hybrid_tiny")), trust_remote_code=True)
    meta = hybridload.load_meta(plan)
    printed = capsys.readouterr().err + caplog.text
    assert "The fast path is not available" not in printed
    assert any("The fast path is not available" in line for line in meta.hybridload_build_report.messages)


def test_check_json_prints_a_json_error_on_exit_2(capsys, tmp_path):
    code, out, err = run(capsys, "check", str(tmp_path / "missing"), "--json")
    assert code == 2
    error = json.loads(out)["error"]
    assert error["type"] == "PlanError" and "neither an existing local folder" in error["message"]


@pytest.mark.parametrize("command", ["signature", "lock"])
def test_outputs_are_checked_before_the_build(capsys, tmp_path, llama_folder, monkeypatch, command):
    import hybridload.load.meta as meta_module

    def no_build(*args, **kwargs):
        raise AssertionError("built before checking the output path")

    monkeypatch.setattr(meta_module, "load_meta", no_build)
    folder = tmp_path / "a-folder"
    folder.mkdir()
    code, _, err = run(capsys, command, str(llama_folder()), "-o", str(folder))
    assert code == 2 and "is a folder" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run(capsys, command, str(llama_folder()), "-o", str(blocker / "out.json"))
    assert code == 2 and "not a writable folder" in err


@pytest.mark.parametrize("command", ["signature", "lock"])
def test_outputs_create_their_folder_and_are_written_whole(capsys, tmp_path, llama_folder, command):
    target = tmp_path / "deep" / "er" / "out.json"
    code, _, _ = run(capsys, command, str(llama_folder()), "-o", str(target))
    assert code == 0 and json.loads(target.read_text())
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]  # no temp file left behind


def test_doctor_says_when_the_repositorys_own_code_was_not_used(capsys, tmp_path):
    """A repository with remote code and a native class: without trust the native class runs, and doctor says so."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path / "native_with_remote"
    LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomLlama"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_custom.py").write_text("from transformers import LlamaForCausalLM as CustomLlama\n")
    code, out, _ = run(capsys, "doctor", "--model", str(folder))
    assert code == 0
    assert "the repository's own code was not used" in out and "--trust-remote-code" in out
