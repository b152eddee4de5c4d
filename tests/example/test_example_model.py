"""The bundled example runs: torch path and kernel path agree, the real load fails without mamba_ssm like
Nemotron-H does, and the laptop's meta build has the tree the server signed."""
from __future__ import annotations

import torch

import hybridload

MAMBA_LAYERS = 4  # "M-M*ME-M"
FROM_PACKAGES = {
    "rmsnorm_fn": "mamba_ssm.ops.triton.layernorm_gated",
    "mamba_chunk_scan_combined": "mamba_ssm.ops.triton.ssd_combined",
    "selective_state_update": "mamba_ssm.ops.triton.selective_state_update",
    "causal_conv1d_fn": "causal_conv1d",
    "causal_conv1d_update": "causal_conv1d",
}


def test_transformers_detects_the_fake_packages_with_their_versions(example_runs):
    """tests/fakekernels needs no dist-info: transformers reads __version__ from the module."""
    assert example_runs["server"].report["detected"] == {"mamba_ssm": [True, "2.2.4"], "causal_conv1d": [True, "1.5.0"]}


def test_server_without_cuda_takes_the_torch_path_with_rmsnorm_from_mamba_ssm(example_runs):
    report = example_runs["server"].report["torch_path"]
    assert report["fast_path"] is False  # transformers' kernel checks need CUDA
    assert report["bound"] == {name: (path if name == "rmsnorm_fn" else None) for name, path in FROM_PACKAGES.items()}
    assert report["forward_calls"] == {"rmsnorm_fn": MAMBA_LAYERS}  # the gated norm runs on every path
    assert report["logits_finite"]
    assert report["decode_steps"] >= 20
    assert report["decode_max_diff"] < 1e-4  # prefill + every cached decode step == one full forward


def test_server_kernel_path_runs_the_kernels(example_runs):
    report = example_runs["server"].report["kernel_path"]
    assert report["fast_path"] is True
    assert report["bound"] == FROM_PACKAGES
    calls = report["forward_calls"]
    assert calls["mamba_chunk_scan_combined"] == calls["causal_conv1d_fn"] == calls["rmsnorm_fn"] == MAMBA_LAYERS
    assert "selective_state_update" not in calls and "causal_conv1d_update" not in calls
    decode = report["decode_calls"]
    # a prefill (scan) then one update-kernel call per decode step per Mamba2 layer
    assert decode["mamba_chunk_scan_combined"] == decode["causal_conv1d_fn"] == 2 * MAMBA_LAYERS  # full + prefill
    steps = report["decode_steps"]
    assert steps >= 20
    assert decode["causal_conv1d_update"] == decode["selective_state_update"] == steps * MAMBA_LAYERS
    assert report["decode_max_diff"] < 1e-4


def test_kernel_path_and_torch_path_give_the_same_logits(example_runs):
    run = example_runs["server"].check()
    torch_path = torch.load(run.out / "logits_torch.pt")
    kernel_path = torch.load(run.out / "logits_kernels.pt")
    assert torch_path.shape == kernel_path.shape and torch_path.shape[::2] == (2, 512)
    assert torch_path.std() > 0.5  # informative weights: a wrong path could not hide in tiny logits
    torch.testing.assert_close(kernel_path, torch_path, rtol=1e-4, atol=1e-4)
    report = run.report
    assert report["kernel_path"]["generated"] == report["torch_path"]["generated"]


def test_shipped_signature_is_the_real_loads(example_runs, example_dir):
    reference = hybridload.TreeSignature.read(example_dir / "reference_signature.json")
    signed = hybridload.TreeSignature.read(example_runs["server"].check().out / "signature.json")
    assert signed.digest == reference.digest, hybridload.compare(signed, reference)


def test_laptop_meta_build_matches_the_server_tree(example_runs, example_dir):
    run = example_runs["laptop"]
    assert run.report["devices"] == ["meta"]
    assert run.report["kernel_modules_left"] == []  # stand-ins leave sys.modules with the window
    laptop = hybridload.TreeSignature.read(run.out / "signature.json")
    server = hybridload.TreeSignature.read(example_dir / "reference_signature.json")
    assert laptop.digest == server.digest, hybridload.compare(laptop, server)


def test_trust_decision_picks_the_class(example_runs, example_dir):
    """model_type "nemotron_h" is native to transformers: untrusted loads silently build another tree."""
    untrusted = example_runs["laptop"].report["untrusted"]
    assert untrusted["config"].startswith("transformers.models.nemotron_h")
    assert untrusted["model"].startswith("transformers.models.nemotron_h")
    reference = hybridload.TreeSignature.read(example_dir / "reference_signature.json")
    assert untrusted["digest"] != reference.digest


def test_nnsight_scan_runs_on_the_laptop(example_runs):
    scan = example_runs["laptop"].report["scan"]
    tokens = scan["tokens"]
    assert scan["mamba_mixer"] == [1, tokens, 64] and scan["moe"] == [1, tokens, 64]
    assert scan["logits"] == [1, tokens, 512]


def test_real_load_without_mamba_ssm_fails_with_a_clear_import_error(example_runs):
    """After the meta build, a real load re-imports the modeling file for real (stand-ins were evicted)."""
    error = example_runs["laptop"].report["load_error"]
    assert error["type"] == "ImportError"
    assert "mamba-ssm is required" in error["message"]
