"""The `hybridload` CLI: exit codes (0 ok / 1 difference / 2 usage or load error) and --json output."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hybridload.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_bundled_example_equals_reference(capsys):
    code, out, _ = run(capsys, "check", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["identical"] is True
    assert data["against"].endswith("reference_signature.json")
    assert "mamba_ssm" in data["stood_in"]["packages"]
    assert {"mamba", "moe", "attention", "mlp"} <= set("+".join(data["layer_kinds"]).split("+"))


def test_check_human_output_names_digest_and_layers(capsys):
    code, out, _ = run(capsys, "check")
    assert code == 0
    assert "digest" in out and "identical tree" in out and "mamba" in out


def test_signature_diff_and_exit_codes(capsys, tmp_path, llama_folder):
    a = llama_folder("a", hidden=32)
    b = llama_folder("b", hidden=48)
    sig_a, sig_a2, sig_b = tmp_path / "a.json", tmp_path / "a2.json", tmp_path / "b.json"
    assert run(capsys, "signature", str(a), "-o", str(sig_a))[0] == 0
    assert run(capsys, "signature", str(a), "-o", str(sig_a2))[0] == 0
    assert sig_a.read_bytes() == sig_a2.read_bytes()
    assert run(capsys, "signature", str(b), "-o", str(sig_b))[0] == 0
    assert run(capsys, "diff", str(sig_a), str(sig_a2))[0] == 0
    code, out, _ = run(capsys, "diff", str(sig_a), str(sig_b), "--json")
    assert code == 1
    data = json.loads(out)
    assert data["identical"] is False
    assert data["first_path"] == "lm_head.weight" or data["first_path"].startswith("model.")


def test_check_against_a_different_tree_exits_1_with_first_path(capsys, tmp_path, llama_folder):
    a = llama_folder("a", hidden=32, layers=2)
    b = llama_folder("b", hidden=32, layers=3)
    sig = tmp_path / "b.json"
    run(capsys, "signature", str(b), "-o", str(sig))
    code, out, _ = run(capsys, "check", str(a), "--against", str(sig))
    assert code == 1
    assert "TREES DIFFER" in out and "model.layers.2" in out


def test_lock_file_round_trip(capsys, tmp_path, llama_folder):
    a = llama_folder("a")
    lock = tmp_path / "hybridload.lock.json"
    code, out, _ = run(capsys, "lock", str(a), "-o", str(lock), "--json")
    assert code == 0
    document = json.loads(lock.read_text())
    assert document["schema"] == "hybridload.lock/1" and document["plan"]["repo"] and document["signature"]
    assert json.loads(out)["digest"] == json.loads(run(capsys, "check", str(a), "--against", str(lock), "--json")[1])["digest"]
    assert run(capsys, "check", str(a), "--against", str(lock))[0] == 0


def test_load_and_file_errors_exit_2(capsys, tmp_path):
    code, _, err = run(capsys, "check", str(tmp_path / "does-not-exist"))
    assert code == 2 and "error" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run(capsys, "diff", str(bad), str(bad))
    assert code == 2 and "not JSON" in err


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["diff", "only-one-argument"])
    assert info.value.code == 2


def test_doctor_json_reports_kernel_packages(capsys):
    code, out, _ = run(capsys, "doctor", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["kernel_packages"]["mamba_ssm"]["status"] == "absent"
    assert data["cuda"]["available"] is False
    assert data["versions"]["transformers"]


def test_entry_point_is_installed_and_json_is_clean(tmp_path, llama_folder):
    folder = llama_folder("a")
    exe = Path(sys.executable).with_name("hybridload")
    result = subprocess.run([str(exe), "check", str(folder), "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["digest"]  # stdout is exactly one JSON document


def _remote_example_copy(tmp_path):
    import shutil

    import hybridload

    folder = tmp_path / "example"
    shutil.copytree(hybridload.examples.path("hybrid_tiny"), folder)
    return folder


def test_one_lock_format_read_by_check_resolve_dispatch_and_the_plugin(capsys, tmp_path):
    import hybridload
    from hybridload.plan.lockfile import LOCK_SCHEMA, read_lock

    folder = _remote_example_copy(tmp_path)
    lock = tmp_path / "locks" / "example.lock.json"
    assert run(capsys, "lock", str(folder), "--trust-remote-code", "-o", str(lock))[0] == 0
    assert json.loads(lock.read_text())["schema"] == LOCK_SCHEMA
    code, out, _ = run(capsys, "check", "--against", str(lock), "--trust-remote-code")
    assert code == 0 and "plan and remote-code hashes match" in out and "identical tree" in out
    plan = hybridload.resolve(folder, trust_remote_code=True, lock=lock)  # the API reads the CLI's file
    assert plan == read_lock(lock).plan
    from hybridload.integrations.pytest_plugin import TreeChecker

    TreeChecker(update=False).assert_matches(hybridload.load_meta(plan), lock)  # so does the plugin


def test_check_against_a_lock_catches_an_edited_code_file(capsys, tmp_path):
    folder = _remote_example_copy(tmp_path)
    lock = tmp_path / "example.lock.json"
    assert run(capsys, "lock", str(folder), "--trust-remote-code", "-o", str(lock))[0] == 0
    with open(folder / "modeling_nemotron_h.py", "a") as handle:
        handle.write("\n# an edit that does not change the tree\n")
    code, out, err = run(capsys, "check", str(folder), "--against", str(lock), "--trust-remote-code")
    assert code == 2 and "identical tree" not in out
    assert "modeling_nemotron_h.py changed" in err
