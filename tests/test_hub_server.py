"""The loopback Hub works with the real huggingface_hub client and transformers, over HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    create_repo,
    hf_hub_download,
    list_repo_files,
    snapshot_download,
    upload_folder,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hub_fixtures import HubClient

WEIGHTS = bytes(range(256)) * 300  # binary, and *.safetensors is an LFS pattern in .gitattributes
CONFIG = json.dumps({"hidden_size": 32, "note": "small json"}).encode()


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "upload"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_bytes(CONFIG)
    (folder / "model.safetensors").write_bytes(WEIGHTS)
    (folder / "sub" / "notes.txt").write_text("hello\n")
    return folder


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def test_create_repo_and_exists(hub: HubClient) -> None:
    repo_id = hub.new_repo_id()
    api = HfApi()  # default endpoint: the fixture patched constants.ENDPOINT
    assert not api.repo_exists(repo_id)
    url = create_repo(repo_id)
    assert url.repo_id == repo_id and url.startswith(hub.endpoint)
    assert api.repo_exists(repo_id)
    with pytest.raises(HfHubHTTPError) as info:
        create_repo(repo_id)
    assert info.value.response.status_code == 409
    assert create_repo(repo_id, exist_ok=True).repo_id == repo_id
    assert api.whoami()["name"] == "tester"
    info_ = api.model_info(repo_id)
    assert len(info_.sha) == 40 and [s.rfilename for s in info_.siblings] == [".gitattributes"]


def test_upload_folder_lfs_list_and_download(hub: HubClient, tmp_path: Path) -> None:
    repo_id = hub.new_repo_id()
    create_repo(repo_id)
    start = len(hub.server.requests)
    commit = upload_folder(repo_id=repo_id, folder_path=_folder(tmp_path), commit_message="first")
    calls = hub.server.requests[start:]
    assert any(c.startswith("POST /api/models/") and "/preupload/main" in c for c in calls)
    assert any(c.startswith(f"POST /{repo_id}.git/info/lfs/objects/batch") for c in calls)
    assert any(c.startswith(f"PUT /_lfs/{hashlib.sha256(WEIGHTS).hexdigest()}") for c in calls)
    assert not any("xet" in c for c in calls)

    expected = [".gitattributes", "config.json", "model.safetensors", "sub/notes.txt"]
    assert sorted(list_repo_files(repo_id)) == expected
    info = hub.api.model_info(repo_id, files_metadata=True)
    assert info.sha == commit.oid
    lfs = {s.rfilename: s.lfs for s in info.siblings}
    assert lfs["model.safetensors"].sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert lfs["config.json"] is None and lfs["sub/notes.txt"] is None

    top = {e.path for e in hub.api.list_repo_tree(repo_id)}
    assert top == {".gitattributes", "config.json", "model.safetensors", "sub"}
    hub.server.tree_page_size, page_size = 2, hub.server.tree_page_size  # force Link-header pagination
    try:
        deep = [e.path for e in hub.api.list_repo_tree(repo_id, recursive=True)]
    finally:
        hub.server.tree_page_size = page_size
    assert sorted(deep) == sorted([*expected, "sub"])
    infos = hub.api.get_paths_info(repo_id, ["config.json", "sub", "nope"])
    assert [e.path for e in infos] == ["config.json", "sub"]

    single = {name: Path(hf_hub_download(repo_id, name)).read_bytes() for name in expected}
    assert single["model.safetensors"] == WEIGHTS and single["config.json"] == CONFIG
    snapshot = Path(snapshot_download(repo_id))
    assert {name: (snapshot / name).read_bytes() for name in expected} == single
    assert snapshot.name == commit.oid

    url = f"{hub.endpoint}/{repo_id}/resolve/main/model.safetensors"
    status, body, headers = _get(url, {"Range": "bytes=10-19"})
    assert status == 206 and body == WEIGHTS[10:20]
    assert headers["Content-Range"] == f"bytes 10-19/{len(WEIGHTS)}"
    assert headers["X-Linked-Etag"].strip('"') == hashlib.sha256(WEIGHTS).hexdigest()


def test_second_commit_moves_main_and_old_sha_still_downloads(hub: HubClient, tmp_path: Path) -> None:
    repo_id = hub.new_repo_id()
    create_repo(repo_id)
    first = upload_folder(repo_id=repo_id, folder_path=_folder(tmp_path))
    new_config = b'{"hidden_size": 64}'
    second = hub.api.create_commit(
        repo_id,
        operations=[CommitOperationAdd("config.json", new_config), CommitOperationDelete("sub/notes.txt")],
        commit_message="second",
    )
    assert second.oid != first.oid and hub.api.model_info(repo_id).sha == second.oid
    assert [b.target_commit for b in hub.api.list_repo_refs(repo_id).branches] == [second.oid]
    titles = [c.title for c in hub.api.list_repo_commits(repo_id)]
    assert titles == ["second", "Upload folder using huggingface_hub", "initial commit"]
    assert Path(hf_hub_download(repo_id, "config.json")).read_bytes() == new_config
    assert Path(hf_hub_download(repo_id, "config.json", revision=first.oid)).read_bytes() == CONFIG
    assert Path(hf_hub_download(repo_id, "sub/notes.txt", revision=first.oid)).read_text() == "hello\n"
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "sub/notes.txt")
    # Unchanged files are skipped: the preupload answer carries the remote oid.
    again = hub.api.upload_file(path_or_fileobj=new_config, path_in_repo="config.json", repo_id=repo_id)
    assert again.oid == second.oid


def test_missing_things_raise_the_client_errors(hub: HubClient) -> None:
    repo_id = hub.new_repo_id()
    create_repo(repo_id)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "absent.json")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(hub.new_repo_id("missing"), "config.json")
    with pytest.raises(RepositoryNotFoundError):
        hub.api.model_info(hub.new_repo_id("missing"))
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, ".gitattributes", revision="no-such-branch")
    status, _, headers = _get(f"{hub.endpoint}/{repo_id}/resolve/main/absent.json")
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound"
    assert len(headers["X-Repo-Commit"]) == 40  # lets the client cache the file's absence


def test_lfs_upload_is_checked_against_its_oid(hub: HubClient) -> None:
    wrong = "0" * 64
    request = urllib.request.Request(f"{hub.endpoint}/_lfs/{wrong}", data=b"not matching", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    assert info.value.code == 400
    assert not (hub.server.root / "blobs" / wrong).exists()
    # A chunked upload (no Content-Length) with the right oid is stored.
    data = b"chunked body " * 1000
    oid = hashlib.sha256(data).hexdigest()
    request = urllib.request.Request(f"{hub.endpoint}/_lfs/{oid}", data=iter([data[:5000], data[5000:]]),
                                     method="PUT", headers={"Transfer-Encoding": "chunked"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 200
    assert (hub.server.root / "blobs" / oid).read_bytes() == data


def test_branches_pull_requests_and_datasets(hub: HubClient) -> None:
    api = hub.api
    repo_id = hub.new_repo_id()
    api.create_repo(repo_id)
    api.create_branch(repo_id, branch="dev")
    api.upload_file(path_or_fileobj=b"on dev", path_in_repo="dev.txt", repo_id=repo_id, revision="dev")
    assert Path(hf_hub_download(repo_id, "dev.txt", revision="dev")).read_bytes() == b"on dev"
    assert "dev.txt" not in list_repo_files(repo_id)
    pr = api.upload_file(path_or_fileobj=b"proposal", path_in_repo="pr.txt", repo_id=repo_id, create_pr=True)
    assert pr.pr_url is not None and pr.pr_revision == "refs/pr/1"
    refs = api.list_repo_refs(repo_id, include_pull_requests=True)
    assert {b.name for b in refs.branches} == {"main", "dev"}
    assert [p.ref for p in refs.pull_requests] == ["refs/pr/1"]
    assert Path(hf_hub_download(repo_id, "pr.txt", revision="refs/pr/1")).read_bytes() == b"proposal"

    dataset_id = hub.new_repo_id("data")
    api.create_repo(dataset_id, repo_type="dataset")
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="data/train.csv", repo_id=dataset_id,
                    repo_type="dataset")
    assert api.dataset_info(dataset_id).sha is not None
    path = hf_hub_download(dataset_id, "data/train.csv", repo_type="dataset")
    assert Path(path).read_bytes() == b"a,b\n1,2\n"
    api.delete_repo(dataset_id, repo_type="dataset")
    assert not api.repo_exists(dataset_id, repo_type="dataset")
    assert hub.server.unrouted == []


def test_transformers_push_and_load_online_then_offline(hub: HubClient) -> None:
    import torch
    from transformers import AutoModel, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                        vocab_size=99)
    model = BertModel(config)
    model.push_to_hub("tester/tiny-bert")
    assert "model.safetensors" in list_repo_files("tester/tiny-bert")

    loaded = AutoModel.from_pretrained("tester/tiny-bert")
    expected, got = model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)

    # A fresh interpreter, offline, loads the same repo id from the cache the download above filled.
    script = (
        "import hashlib, json\n"
        "from transformers import AutoModel\n"
        "m = AutoModel.from_pretrained('tester/tiny-bert')\n"
        "print(json.dumps({k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()"
        " for k, v in m.state_dict().items()}))\n"
    )
    before = len(hub.server.requests)
    result = subprocess.run([sys.executable, "-c", script], env={**os.environ, **hub.env(offline=True)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    digests = json.loads(result.stdout.strip().splitlines()[-1])
    assert digests == {k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()
                       for k, v in expected.items()}
    assert hub.server.requests[before:] == []  # offline: the server was not asked anything
