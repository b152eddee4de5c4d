"""Where a checkpoint's tensor index comes from: local shard headers, an index file, or the Hub's safetensors
metadata through huggingface_hub (faked here: the Hub is not reachable from the test machine), offline-aware."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import coverage_fixtures as fx
import huggingface_hub
import pytest
from huggingface_hub import errors as hub_errors
from huggingface_hub.hf_api import SafetensorsFileMetadata, SafetensorsRepoMetadata, TensorInfo

from hybridload.serve.coverage import TensorIndex, checkpoint_coverage, hub_index, local_index
from hybridload.serve.coverage.hub import cached_index_path
from hybridload.errors import CheckpointError, CheckpointUnavailableError
from hybridload.serve.streaming.checkpoint import read_header

REPO = "org/tiny-moe"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def metadata_of(folder: Path) -> SafetensorsRepoMetadata:
    """What get_safetensors_metadata returns for a repo holding these files (built from their headers)."""
    files = sorted(p.name for p in folder.glob("*.safetensors"))
    files_metadata = {}
    for file in files:
        header = read_header(folder / file)
        tensors = {
            key: TensorInfo(dtype=info["dtype"], shape=info["shape"], data_offsets=tuple(info["data_offsets"]))
            for key, info in header.items()
            if key != "__metadata__"
        }
        files_metadata[file] = SafetensorsFileMetadata(metadata=header.get("__metadata__", {}), tensors=tensors)
    index = folder / "model.safetensors.index.json"
    weight_map = json.loads(index.read_text())["weight_map"] if index.is_file() else {
        key: files[0] for key in files_metadata[files[0]].tensors
    }
    return SafetensorsRepoMetadata(metadata=None, sharded=index.is_file(), weight_map=weight_map, files_metadata=files_metadata)


class FakeHub:
    """Stands in for huggingface_hub.get_safetensors_metadata; records every call."""

    def __init__(self, folder: Path | None = None, error: BaseException | None = None) -> None:
        self.folder, self.error, self.calls = folder, error, []

    def __call__(self, repo_id: str, *, revision: str | None = None, token=None, **_: object) -> SafetensorsRepoMetadata:
        self.calls.append((repo_id, revision))
        if self.error is not None:
            raise self.error
        assert self.folder is not None
        return metadata_of(self.folder)


@pytest.fixture
def isolated_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Online by default, with empty hybridload and Hugging Face caches under tmp_path."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HYBRIDLOAD_CACHE", str(tmp_path / "hybridload-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path / "hf-cache"


def error(cls: type) -> BaseException:
    """A huggingface_hub HTTP error without an HTTP response (their constructors need one)."""
    exc = cls.__new__(cls)
    Exception.__init__(exc, f"{cls.__name__} for {REPO}")
    return exc


def put_in_hf_cache(cache: Path, folder: Path, *, files: list[str] | None = None) -> None:
    """The Hugging Face cache layout of REPO at COMMIT (refs/main -> snapshot folder)."""
    repo = cache / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for path in folder.iterdir():
        if files is None or path.name in files:
            shutil.copy(path, snapshot / path.name)


def test_hub_index_reads_headers_through_huggingface_hub_and_caches_by_commit(saved, isolated_hub, monkeypatch) -> None:
    folder = saved("qwen2_moe")
    fake = FakeHub(folder)
    monkeypatch.setattr(huggingface_hub, "get_safetensors_metadata", fake)

    index = hub_index(REPO, COMMIT)
    assert fake.calls == [(REPO, COMMIT)]
    assert dict(index.tensors) == dict(local_index(folder).tensors) and index.source == f"{REPO}@{COMMIT}"
    assert cached_index_path(REPO, COMMIT).is_file()

    fake.error = ConnectionError("must not be asked again")  # a commit's index never changes: the cache answers
    assert hub_index(REPO, COMMIT).tensors == index.tensors and len(fake.calls) == 1

    tree = fx.build_meta(fx.make_config("qwen2_moe"))
    report = checkpoint_coverage(tree, REPO, revision=COMMIT)
    assert report.ok and report.checkpoint == f"{REPO}@{COMMIT}"
    assert report.rules == checkpoint_coverage(tree, folder).rules


def test_a_branch_is_fetched_every_time_and_not_cached(saved, isolated_hub, monkeypatch) -> None:
    fake = FakeHub(saved("llama"))
    monkeypatch.setattr(huggingface_hub, "get_safetensors_metadata", fake)
    hub_index(REPO, "main")
    hub_index(REPO)
    assert fake.calls == [(REPO, "main"), (REPO, None)]
    assert not (Path(str(cached_index_path(REPO, COMMIT))).parent).exists()


def test_offline_without_a_cached_copy_says_what_to_do(isolated_hub, monkeypatch) -> None:
    fake = FakeHub(error=AssertionError("offline mode must not ask the Hub"))
    monkeypatch.setattr(huggingface_hub, "get_safetensors_metadata", fake)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointUnavailableError) as caught:
        hub_index(REPO, COMMIT)
    message = str(caught.value)
    assert "HF_HUB_OFFLINE is set" in message and "no copy of it is cached" in message
    assert "TensorIndex.write" in message and "local folder" in message
    assert fake.calls == []


def test_offline_reads_the_headers_of_the_local_hugging_face_cache(saved, isolated_hub, monkeypatch) -> None:
    folder = saved("qwen2_moe")
    put_in_hf_cache(isolated_hub, folder)
    monkeypatch.setattr(huggingface_hub, "get_safetensors_metadata", FakeHub(error=AssertionError("offline")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for revision in (COMMIT, "main", None):
        index = hub_index(REPO, revision)
        assert index.tensors == local_index(folder).tensors
        assert index.source.endswith("(local Hugging Face cache)")


def test_an_incomplete_cached_snapshot_is_named(saved, isolated_hub, monkeypatch) -> None:
    folder = saved("qwen2_moe")
    put_in_hf_cache(isolated_hub, folder, files=["config.json", "model.safetensors.index.json"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointUnavailableError, match="cached snapshot is incomplete.*not there"):
        hub_index(REPO, COMMIT)


def test_an_unreachable_hub_falls_back_to_the_cache_or_says_so(saved, isolated_hub, monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub, "get_safetensors_metadata", FakeHub(error=ConnectionError("no route to host")))
    with pytest.raises(CheckpointUnavailableError, match="the Hub cannot be reached .*no route to host"):
        hub_index(REPO, COMMIT)
    put_in_hf_cache(isolated_hub, saved("llama"))
    assert hub_index(REPO, COMMIT).tensors == local_index(saved("llama")).tensors


@pytest.mark.parametrize(
    "raised, fragment",
    [
        (hub_errors.NotASafetensorsRepoError("no safetensors"), "reads safetensors headers only"),
        (error(hub_errors.GatedRepoError), "is gated: accept its terms"),
        (error(hub_errors.RepositoryNotFoundError), "was not found on the Hub"),
        (error(hub_errors.RevisionNotFoundError), "has no revision"),
        (error(hub_errors.OfflineModeIsEnabled), "the Hub cannot be reached"),
    ],
)
def test_hub_errors_become_typed_errors_that_say_what_to_do(isolated_hub, monkeypatch, raised, fragment) -> None:
    monkeypatch.setattr(huggingface_hub, "get_safetensors_metadata", FakeHub(error=raised))
    with pytest.raises(CheckpointUnavailableError, match=fragment):
        hub_index(REPO, COMMIT)


def test_something_that_is_neither_a_path_nor_a_repo_id(isolated_hub, saved) -> None:
    tree = fx.build_meta(fx.make_config("llama"))
    with pytest.raises(CheckpointUnavailableError, match="does not exist on this machine"):
        checkpoint_coverage(tree, "./no/such/folder")
    with pytest.raises(CheckpointUnavailableError, match="neither an existing local folder"):
        hub_index("not a repo id!")


# -- local folders ------------------------------------------------------------------------------------------------


def test_single_file_and_sharded_checkpoints(saved, tmp_path: Path) -> None:
    state = fx.read_state(saved("llama"))
    single = local_index(fx.write_state(tmp_path / "single", state, shards=1))
    sharded = local_index(fx.write_state(tmp_path / "sharded", state, shards=3))
    assert single.files == ["model.safetensors"] and len(sharded.files) == 3
    assert {k: (t.shape, t.dtype) for k, t in single.tensors.items()} == {
        k: (t.shape, t.dtype) for k, t in sharded.tensors.items()
    } == {k: (tuple(v.shape), "F32") for k, v in state.items()}
    assert sharded.metadata["total_size"] == sum(t.nbytes for t in state.values())


def test_header_only_shards_are_enough(saved, tmp_path: Path) -> None:
    """Coverage reads headers only: shards cut right after their header still give the whole index."""
    folder = tmp_path / "headers"
    shutil.copytree(saved("qwen2_moe"), folder)
    for shard in folder.glob("*.safetensors"):
        raw = shard.read_bytes()
        (length,) = struct.unpack("<Q", raw[:8])
        shard.write_bytes(raw[: 8 + length])
    assert local_index(folder).tensors == local_index(saved("qwen2_moe")).tensors
    assert checkpoint_coverage(fx.build_meta(fx.make_config("qwen2_moe")), folder).ok


def test_broken_local_checkpoints_get_typed_errors(saved, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(saved("qwen2_moe"), folder)
    shards = sorted(folder.glob("*.safetensors"))

    shards[0].write_bytes(shards[0].read_bytes()[:20])  # truncated inside the header
    with pytest.raises(CheckpointError, match=f"shard {shards[0].name} .* unreadable header"):
        local_index(folder)

    shards[0].unlink()
    with pytest.raises(CheckpointUnavailableError, match="named by model.safetensors.index.json are not there"):
        local_index(folder)

    shutil.copy(saved("qwen2_moe") / shards[0].name, shards[0])
    index_file = folder / "model.safetensors.index.json"
    document = json.loads(index_file.read_text())
    moved = next(iter(document["weight_map"]))
    document["weight_map"][moved] = shards[1].name if document["weight_map"][moved] == shards[0].name else shards[0].name
    index_file.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="index does not match its shards .*" + moved.replace(".", r"\.")):
        local_index(folder)

    bins = tmp_path / "bins"
    bins.mkdir()
    (bins / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointUnavailableError, match="holds pytorch_model.bin.*safetensors headers only"):
        local_index(bins)
    with pytest.raises(CheckpointUnavailableError, match="does not exist"):
        local_index(tmp_path / "absent")


def test_index_files_of_another_kind_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "signature.json"
    path.write_text(json.dumps({"schema": "hybridload.tree-signature/1"}))
    with pytest.raises(CheckpointError, match="not a hybridload checkpoint index .*tree-signature"):
        TensorIndex.read(path)
    path.write_text(json.dumps({"schema": "hybridload.checkpoint-index/1", "source": "x", "files": {"a": {"k": ["F32"]}}}))
    with pytest.raises(CheckpointError, match="malformed"):
        TensorIndex.read(path)
