"""Revision -> commit: online through HfApi (injected), offline from real cache refs, clear errors otherwise."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from huggingface_hub import HfApi

import hybridload
from hybridload.errors import RevisionResolutionError
from hybridload.plan.revision import fingerprint, fingerprint_files, resolve_commit

SHA_A = "a1" * 20
SHA_B = "b2" * 20


def _hub_answers(monkeypatch: pytest.MonkeyPatch, answer: object) -> list[tuple[str, object]]:
    calls: list[tuple[str, object]] = []

    def repo_info(self: HfApi, repo_id: str, *, revision: object = None, **_: object) -> object:
        calls.append((repo_id, revision))
        if isinstance(answer, BaseException):
            raise answer
        return SimpleNamespace(sha=answer)

    monkeypatch.setattr(HfApi, "repo_info", repo_info)
    return calls


def _http_error(cls: type, status: int) -> BaseException:
    try:  # the HTTP client huggingface_hub itself uses: httpx2 from 2.x, httpx in 1.x
        import httpx2 as http
    except ImportError:
        import httpx as http

    response = http.Response(status, request=http.Request("GET", "https://huggingface.co/api/models/org/name"))
    return cls(f"HTTP {status}", response=response)


def test_online_branch_resolves_through_the_hub_and_records_the_ref(hub_cache, monkeypatch):
    calls = _hub_answers(monkeypatch, SHA_A)
    resolved = resolve_commit("org/name", "dev")
    assert resolved.commit == SHA_A
    assert calls == [("org/name", "dev")]
    assert "Hub" in resolved.note
    # recorded where huggingface_hub keeps it, so a later offline resolution agrees
    assert (hub_cache.storage("org/name") / "refs" / "dev").read_text() == SHA_A


def test_default_branch_is_main(hub_cache, monkeypatch):
    calls = _hub_answers(monkeypatch, SHA_B)
    assert resolve_commit("org/name", None).commit == SHA_B
    assert calls == [("org/name", None)]
    assert (hub_cache.storage("org/name") / "refs" / "main").read_text() == SHA_B


def test_pinned_commit_needs_no_lookup(hub_cache, monkeypatch):
    calls = _hub_answers(monkeypatch, AssertionError("the Hub must not be asked for a pinned sha"))
    resolved = resolve_commit("org/name", SHA_A)
    assert resolved.commit == SHA_A and calls == []


def test_unreachable_hub_falls_back_to_the_cache_with_a_note(hub_cache, monkeypatch):
    hub_cache.set_ref("org/name", "main", SHA_A)
    _hub_answers(monkeypatch, ConnectionError("name resolution failed"))
    resolved = resolve_commit("org/name", None)
    assert resolved.commit == SHA_A
    assert "unreachable" in resolved.note and "ConnectionError" in resolved.note


def test_unreachable_hub_without_cache_says_how_to_fix(hub_cache, monkeypatch):
    _hub_answers(monkeypatch, ConnectionError("name resolution failed"))
    with pytest.raises(RevisionResolutionError) as info:
        resolve_commit("org/name", "dev")
    message = str(info.value)
    assert "'dev'" in message and "org/name" in message
    assert "revision=<40-hex commit sha>" in message and "snapshot_download" in message


def test_hub_server_error_falls_back_to_the_cache(hub_cache, monkeypatch):
    from huggingface_hub.errors import HfHubHTTPError

    hub_cache.set_ref("org/name", "main", SHA_B)
    _hub_answers(monkeypatch, _http_error(HfHubHTTPError, 503))
    assert resolve_commit("org/name", None).commit == SHA_B


def test_unknown_revision_is_a_typed_error(hub_cache, monkeypatch):
    from huggingface_hub.errors import RevisionNotFoundError

    hub_cache.set_ref("org/name", "nope", SHA_A)  # a stale cache entry must not hide the Hub's answer
    _hub_answers(monkeypatch, _http_error(RevisionNotFoundError, 404))
    with pytest.raises(RevisionResolutionError, match="no revision 'nope'"):
        resolve_commit("org/name", "nope")


def test_unknown_repo_is_a_typed_error(hub_cache, monkeypatch):
    from huggingface_hub.errors import RepositoryNotFoundError

    _hub_answers(monkeypatch, _http_error(RepositoryNotFoundError, 404))
    with pytest.raises(RevisionResolutionError, match="no repository 'org/name'"):
        resolve_commit("org/name", None)


def test_offline_reads_the_cache_refs_and_never_the_hub(hub_cache, offline, monkeypatch):
    hub_cache.set_ref("org/name", "v1", SHA_A)
    calls = _hub_answers(monkeypatch, AssertionError("offline must not call the Hub"))
    resolved = resolve_commit("org/name", "v1")
    assert resolved.commit == SHA_A and calls == []
    assert "offline" in resolved.note and "refs/v1" in resolved.note


def test_offline_without_a_ref_is_a_clear_error(hub_cache, offline):
    with pytest.raises(RevisionResolutionError) as info:
        resolve_commit("org/name", "v1")
    message = str(info.value)
    assert "offline" in message and "refs" in message and "revision=<40-hex commit sha>" in message


def test_resolve_online_shaped_records_commit_and_note(build, hub_cache, monkeypatch):
    folder = build.llama()
    sha = hub_cache.add_snapshot("org/llama", folder, refs=())
    calls = _hub_answers(monkeypatch, sha)
    plan = hybridload.resolve("org/llama", revision="release")
    assert plan.commit == sha and plan.revision == "release" and plan.source == "hub"
    assert calls == [("org/llama", "release")]
    assert plan.revision_note.startswith("Hub")


def test_resolve_offline_from_a_real_cache_layout(build, hub_cache, offline):
    folder = build.llama()
    sha = hub_cache.add_snapshot("org/llama", folder)
    plan = hybridload.resolve("org/llama")
    assert plan.commit == sha and plan.revision is None
    assert "offline" in plan.revision_note
    assert plan.fingerprint is None


def test_local_fingerprint_covers_config_and_code_not_weights(build):
    folder = build.hybrid(weights="remote")
    files = fingerprint_files(folder)
    assert files == ["config.json", "configuration_nemotron_h.py", "modeling_nemotron_h.py"]
    before = fingerprint(folder, files)
    (folder / "model.safetensors").write_bytes(b"not weights")  # weights are not part of the fingerprint
    assert fingerprint(folder, fingerprint_files(folder)) == before
    with open(folder / "modeling_nemotron_h.py", "a") as handle:
        handle.write("\n# edited\n")
    assert fingerprint(folder, fingerprint_files(folder)) != before


@pytest.mark.parametrize("revision", [
    "/some/file", "../../models--x--y/refs/main", "refs/../../../etc", "main/", "a//b", "with space", "tag~1", "x.lock",
    ".hidden", "a@{1}", "@", "",
])
def test_a_revision_that_is_not_a_ref_name_is_refused_before_the_disk_is_touched(build, hub_cache, offline, monkeypatch, tmp_path, revision):
    from hybridload.errors import PlanError
    from hybridload.plan import revision as revision_module

    sha = hub_cache.add_snapshot("org/model", build.llama())
    target = tmp_path / "some" / "file"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(sha)  # what a path-as-revision would read

    def no_disk(*args, **kwargs):
        raise AssertionError("the cache was read for a revision that is not a ref name")

    monkeypatch.setattr(revision_module, "storage_folder", no_disk)
    with pytest.raises(PlanError, match="not a branch, tag or commit name"):
        hybridload.resolve("org/model", revision=revision)
    with pytest.raises(PlanError, match="code_revision"):
        hybridload.resolve("org/model", code_revision=revision)


@pytest.mark.parametrize("revision", ["main", "v1.0", "release/2025-01", "refs/pr/3", "feature_x.y"])
def test_valid_ref_names_still_resolve_offline(build, hub_cache, offline, revision):
    sha = hub_cache.add_snapshot("org/model", build.llama(), refs=(revision,))
    assert hybridload.resolve("org/model", revision=revision).commit == sha
