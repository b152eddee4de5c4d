"""Lock files: same decisions and tree on another machine; a moved commit or changed code fails before code
runs; a lock records the trust decision and never grants it."""
from __future__ import annotations

import json

import pytest

import hybridload
from hybridload.errors import LockMismatchError, PlanError, SignatureFormatError, TrustError
from hybridload.plan.lockfile import LOCK_SCHEMA, read_lock
from hybridload.plan.model import LoadPlan


def test_plan_json_round_trip(build):
    plan = hybridload.resolve(build.hybrid(), trust_remote_code=True, dtype="bfloat16", attn_implementation="eager")
    again = LoadPlan.from_json(plan.to_json())
    assert again == plan and hash(again) == hash(plan)
    assert json.loads(plan.to_json())["code_files"][0]["path"] == "configuration_nemotron_h.py"


def test_lock_is_written_then_checked(build, tmp_path):
    lock = tmp_path / "model.lock.json"
    folder = build.hybrid()
    plan = hybridload.resolve(folder, trust_remote_code=True, lock=lock)
    document = json.loads(lock.read_text())
    assert document["schema"] == LOCK_SCHEMA and set(document) == {"schema", "plan", "signature"}
    locked = read_lock(lock)
    assert locked.plan == plan
    assert locked.signature == hybridload.signature(hybridload.load_meta(plan))  # the expected tree rides along
    again = hybridload.resolve(folder, trust_remote_code=True, lock=lock)
    assert again == plan  # every field, the dtype's source included


def test_a_lock_never_grants_trust(build, tmp_path, monkeypatch):
    lock = tmp_path / "model.lock.json"
    folder = build.hybrid()
    hybridload.resolve(folder, trust_remote_code=True, lock=lock)
    build.clear_marker()
    with pytest.raises(LockMismatchError, match="never grants trust"):
        hybridload.resolve(folder, lock=lock)
    monkeypatch.setenv("HYBRIDLOAD_TRUST_REMOTE_CODE", "0")  # a deny policy wins over the lock too
    with pytest.raises(LockMismatchError, match="never grants trust"):
        hybridload.resolve(folder, lock=lock)
    assert not build.remote_code_ran()
    assert hybridload.resolve(folder, trust_remote_code=True, lock=lock).trust_remote_code  # explicit wins
    monkeypatch.setenv("HYBRIDLOAD_TRUST_REMOTE_CODE", str(folder))  # so does a policy that trusts the repo
    assert hybridload.resolve(folder, lock=lock).trust_remote_code


def test_lock_fails_when_the_branch_moved(build, hub_cache, offline, tmp_path):
    lock = tmp_path / "model.lock.json"
    sha1 = hub_cache.add_snapshot("org/hybrid", build.hybrid("v1", version=1))
    sha2 = hub_cache.add_snapshot("org/hybrid", build.hybrid("v2", version=2), refs=())
    hybridload.resolve("org/hybrid", trust_remote_code=True, lock=lock)
    hub_cache.set_ref("org/hybrid", "main", sha2)
    build.clear_marker()
    with pytest.raises(LockMismatchError) as info:
        hybridload.resolve("org/hybrid", trust_remote_code=True, lock=lock)
    message = str(info.value)
    assert sha1 in message and sha2 in message and "now resolves" in message
    assert "update_lock=True" in message
    assert not build.remote_code_ran(), "code of the moved commit must not run under a mismatched lock"
    # pinning the locked commit satisfies the lock; refreshing the lock accepts the move
    assert hybridload.resolve("org/hybrid", revision=sha1, trust_remote_code=True, lock=lock).commit == sha1
    fresh = hybridload.resolve("org/hybrid", trust_remote_code=True, lock=lock, update_lock=True)
    assert fresh.commit == sha2 and read_lock(lock).plan.commit == sha2


def test_lock_fails_when_remote_code_changed(build, tmp_path):
    lock = tmp_path / "model.lock.json"
    folder = build.hybrid()
    plan = hybridload.resolve(folder, trust_remote_code=True, lock=lock)
    build.clear_marker()
    with open(folder / "modeling_nemotron_h.py", "a") as handle:
        handle.write("\nprint('surprise')\n")
    with pytest.raises(LockMismatchError) as info:
        hybridload.resolve(folder, trust_remote_code=True, lock=lock)
    message = str(info.value)
    assert "modeling_nemotron_h.py changed" in message and "fingerprint" in message
    assert not build.remote_code_ran(), "changed code must not run under the lock"
    # a plan read from the lock refuses to load the changed code as well (after trust is granted explicitly)
    locked = read_lock(lock).plan
    assert locked == plan
    with pytest.raises(TrustError, match="never grants trust"):
        hybridload.load_meta(locked)
    with pytest.raises(LockMismatchError, match="changed since the plan was resolved"):
        hybridload.load_meta(locked, trust_remote_code=True)
    assert not build.remote_code_ran()


def test_lock_fails_on_a_conflicting_explicit_decision(build, tmp_path):
    lock = tmp_path / "model.lock.json"
    folder = build.hybrid()
    hybridload.resolve(folder, trust_remote_code=True, lock=lock)
    with pytest.raises(LockMismatchError, match="trust_remote_code"):
        hybridload.resolve(folder, trust_remote_code=False, lock=lock)
    with pytest.raises(LockMismatchError, match="dtype"):
        hybridload.resolve(folder, trust_remote_code=True, dtype="float16", lock=lock)


def test_plan_from_a_lock_reproduces_the_tree_on_another_machine(build, hub_cache, offline, tmp_path, tree_of):
    lock = tmp_path / "model.lock.json"
    sha = hub_cache.add_snapshot("org/hybrid", build.hybrid())
    original = hybridload.resolve("org/hybrid", trust_remote_code=True, attn_implementation="flash_attention_2", lock=lock)
    expected = tree_of(hybridload.load_meta(original))
    # "another machine": only the lock travels; main has moved meanwhile
    other = hub_cache.add_snapshot("org/hybrid", build.hybrid("v2", version=2, pattern="M*-E"))
    assert other != sha
    plan = read_lock(lock).plan
    meta = hybridload.load_meta(plan, trust_remote_code=True)  # the other machine's user trusts it, explicitly
    assert tree_of(meta) == expected
    assert sha in type(meta).__module__
    assert meta.config._attn_implementation == "flash_attention_2"


def test_malformed_lock_files_are_typed_errors(build, tmp_path):
    folder = build.llama()
    bad = tmp_path / "bad.lock.json"
    bad.write_text("{not json")
    with pytest.raises(SignatureFormatError, match="not JSON"):
        hybridload.resolve(folder, lock=bad)
    bad.write_text(json.dumps({"schema": 99}))
    with pytest.raises(SignatureFormatError, match="not a hybridload lock file"):
        hybridload.resolve(folder, lock=bad)
    plan = json.loads(hybridload.resolve(folder).to_json())
    bad.write_text(json.dumps(plan))
    with pytest.raises(SignatureFormatError, match="bare load plan"):
        hybridload.resolve(folder, lock=bad)
    plan.pop("commit")
    bad.write_text(json.dumps({"schema": LOCK_SCHEMA, "plan": plan, "signature": None}))
    with pytest.raises(PlanError, match="missing keys: \\['commit'\\]"):
        hybridload.resolve(folder, lock=bad)
    plan["commit"] = None
    plan["trust_remote_code"] = "yes"
    bad.write_text(json.dumps({"schema": LOCK_SCHEMA, "plan": plan, "signature": None}))
    with pytest.raises(PlanError, match="trust_remote_code"):
        hybridload.resolve(folder, lock=bad)
