"""Round trips with the unmodified huggingface_hub client: create, upload, download and inspect
model, dataset and space repos; revisions, branches, tags; tree listings and paths-info."""

from __future__ import annotations

import hashlib
import os

import httpx
import numpy as np
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfFileSystem,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


def _write_tree(folder, files: dict[str, bytes]) -> None:
    for path, content in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def _weights(n: int = 50_000, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32).tobytes()


@pytest.mark.parametrize("repo_type", ["model", "dataset", "space"])
def test_upload_download_snapshot(hub, api, repo_id, repo_type, tmp_path):
    files = {
        "README.md": b"---\nlicense: mit\ntags: [tiny]\n---\n# hello\n",
        "config.json": b'{"hidden_size": 16}',
        "weights/model.safetensors": _weights(),  # LFS (pattern) -> uploaded through Xet
        "nested/deeper/notes.txt": b"notes",
    }
    _write_tree(tmp_path / "src", files)
    url = api.create_repo(repo_id, repo_type=repo_type, space_sdk="gradio" if repo_type == "space" else None)
    assert url.repo_id == repo_id and url.repo_type == repo_type
    info = api.upload_folder(folder_path=tmp_path / "src", repo_id=repo_id, repo_type=repo_type)
    assert len(info.oid) == 40

    assert sorted(api.list_repo_files(repo_id, repo_type=repo_type)) == sorted([".gitattributes", *files])
    repo_info = api.repo_info(repo_id, repo_type=repo_type, files_metadata=True)
    assert repo_info.sha == info.oid and repo_info.card_data["license"] == "mit"
    siblings = {s.rfilename: s for s in repo_info.siblings}
    assert siblings["weights/model.safetensors"].lfs.size == len(files["weights/model.safetensors"])
    assert siblings["config.json"].lfs is None

    for path, content in files.items():
        local = hf_hub_download(repo_id, path, repo_type=repo_type, endpoint=hub.endpoint, token=hub.token,
                                cache_dir=tmp_path / "cache")
        assert open(local, "rb").read() == content
    snapshot = snapshot_download(repo_id, repo_type=repo_type, endpoint=hub.endpoint, token=hub.token,
                                 cache_dir=tmp_path / "cache2")
    for path, content in files.items():
        assert open(os.path.join(snapshot, path), "rb").read() == content


def test_create_repo_conflict_and_exist_ok(api, repo_id):
    api.create_repo(repo_id)
    with pytest.raises(HfHubHTTPError) as error:
        api.create_repo(repo_id)
    assert error.value.response.status_code == 409
    assert "url" in error.value.response.json()
    assert api.create_repo(repo_id, exist_ok=True).repo_id == repo_id
    api.create_repo(repo_id.split("/")[1] + "-x")  # no namespace: goes to the token's user
    assert api.repo_exists(repo_id + "-x")


def test_revision_pinning_branches_and_tags(hub, api, repo_id, tmp_path):
    api.create_repo(repo_id)
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="a.txt", repo_id=repo_id).oid
    api.create_tag(repo_id, tag="v1.0")
    second = api.upload_file(path_or_fileobj=b"v2", path_in_repo="a.txt", repo_id=repo_id).oid
    assert first != second

    def read(revision):
        return open(hf_hub_download(repo_id, "a.txt", revision=revision, endpoint=hub.endpoint, token=hub.token,
                                    cache_dir=tmp_path / "cache"), "rb").read()

    assert read(first) == b"v1"            # an old commit id still serves the old content
    assert read("v1.0") == b"v1"           # so does a tag
    assert read(first[:10]) == b"v1"       # and a unique commit id prefix
    assert read("main") == b"v2"
    assert read(second) == b"v2"

    api.create_branch(repo_id, branch="dev", revision=first)
    api.upload_file(path_or_fileobj=b"dev", path_in_repo="b.txt", repo_id=repo_id, revision="dev")
    assert read("dev") == b"v1"
    assert api.list_repo_files(repo_id, revision="dev") == [".gitattributes", "a.txt", "b.txt"]
    assert "b.txt" not in api.list_repo_files(repo_id)

    api.create_branch(repo_id, branch="feature/x")  # slashes in branch names survive URL quoting
    api.upload_file(path_or_fileobj=b"feature", path_in_repo="a.txt", repo_id=repo_id, revision="feature/x")
    assert read("feature/x") == b"feature"

    refs = api.list_repo_refs(repo_id)
    assert {b.name for b in refs.branches} == {"main", "dev", "feature/x"}
    assert [t.target_commit for t in refs.tags] == [first]
    commits = api.list_repo_commits(repo_id)
    assert [c.commit_id for c in commits[:2]] == [second, first]
    assert commits[-1].title == "initial commit"
    assert commits[0].authors == [hub.user]

    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files(repo_id, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        read("0" * 40)
    api.delete_branch(repo_id, branch="dev")
    api.delete_branch(repo_id, branch="feature/x")
    api.delete_tag(repo_id, tag="v1.0")
    refs = api.list_repo_refs(repo_id)
    assert [b.name for b in refs.branches] == ["main"] and refs.tags == []


def test_create_commit_delete_and_exists(hub, api, repo_id, tmp_path):
    api.create_repo(repo_id, repo_type="dataset")
    api.create_commit(repo_id, repo_type="dataset", commit_message="add", operations=[
        CommitOperationAdd("data/train.csv", b"a,b\n1,2\n"),
        CommitOperationAdd("data/test.csv", b"a,b\n3,4\n"),
        CommitOperationAdd("data/blob.bin", os.urandom(2048)),  # *.bin is LFS
        CommitOperationAdd("keep.txt", b"keep"),
    ])
    assert api.file_exists(repo_id, "data/blob.bin", repo_type="dataset")
    assert not api.file_exists(repo_id, "nope.txt", repo_type="dataset")
    api.delete_file("data/test.csv", repo_id, repo_type="dataset")
    assert not api.file_exists(repo_id, "data/test.csv", repo_type="dataset")
    api.create_commit(repo_id, repo_type="dataset", commit_message="rm",
                      operations=[CommitOperationDelete("data/")])
    assert api.list_repo_files(repo_id, repo_type="dataset") == [".gitattributes", "keep.txt"]
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "data/train.csv", repo_type="dataset", endpoint=hub.endpoint, token=hub.token,
                        cache_dir=tmp_path / "cache")
    with pytest.raises(EntryNotFoundError):
        api.delete_file("never-existed.txt", repo_id, repo_type="dataset")
    api.delete_repo(repo_id, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info(repo_id)
    api.delete_repo(repo_id, repo_type="dataset", missing_ok=True)


def test_unchanged_upload_is_detected(api, repo_id, tmp_path):
    _write_tree(tmp_path / "src", {"a.txt": b"same", "w.safetensors": _weights(1000)})
    api.create_repo(repo_id)
    first = api.upload_folder(folder_path=tmp_path / "src", repo_id=repo_id).oid
    again = api.upload_folder(folder_path=tmp_path / "src", repo_id=repo_id).oid
    assert again == first  # the client saw identical oids in preupload and made no commit
    assert len(api.list_repo_commits(repo_id)) == 2
    infos = {i.path: i for i in api.get_paths_info(repo_id, ["a.txt", "w.safetensors", "missing"])}
    assert set(infos) == {"a.txt", "w.safetensors"}
    assert infos["w.safetensors"].lfs.sha256 == hashlib.sha256(_weights(1000)).hexdigest()
    assert infos["a.txt"].blob_id == hashlib.sha1(b"blob 4\0same").hexdigest()  # git's blob id


def test_tree_pagination_expand_and_filesystem(hub, api, repo_id):
    api.create_repo(repo_id)
    operations = [CommitOperationAdd(f"dir{i % 3}/sub/file{i:02d}.txt", f"content {i}".encode()) for i in range(20)]
    api.create_commit(repo_id, operations=operations, commit_message="many files")
    entries = list(api.list_repo_tree(repo_id, recursive=True))
    files = sorted(e.path for e in entries if hasattr(e, "size") and hasattr(e, "blob_id"))
    assert files == sorted([".gitattributes"] + [op.path_in_repo for op in operations])
    folders = {e.path for e in entries if not hasattr(e, "blob_id")}
    assert folders == {"dir0", "dir1", "dir2", "dir0/sub", "dir1/sub", "dir2/sub"}
    top = list(api.list_repo_tree(repo_id, path_in_repo="dir1/sub", expand=True))
    assert all(e.last_commit.title == "many files" for e in top)

    first_page = httpx.get(f"{hub.endpoint}/api/models/{repo_id}/tree/main?recursive=true",
                           headers={"authorization": f"Bearer {hub.token}"})
    assert len(first_page.json()) == 7 and 'rel="next"' in first_page.headers["link"]

    fs = HfFileSystem(endpoint=hub.endpoint, token=hub.token)
    assert sorted(fs.glob(f"{repo_id}/dir2/**/*.txt")) == sorted(
        f"{repo_id}/{op.path_in_repo}" for op in operations if op.path_in_repo.startswith("dir2"))
    with fs.open(f"{repo_id}/dir0/sub/file03.txt", "rb") as handle:
        handle.seek(8)  # a ranged read
        assert handle.read() == b"3"

    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo_id, path_in_repo="no/such/folder"))


def test_space_info_and_listing(api, repo_id):
    api.create_repo(repo_id, repo_type="space", space_sdk="static")
    api.upload_file(path_or_fileobj=b"<h1>hi</h1>", path_in_repo="index.html", repo_id=repo_id, repo_type="space")
    info = api.space_info(repo_id)
    assert info.sdk == "static" and "index.html" in [s.rfilename for s in info.siblings]
    assert repo_id in [s.id for s in api.list_spaces(author=repo_id.split("/")[0])]


def test_move_repo_and_settings(hub, api, repo_id):
    api.create_repo(repo_id)
    api.update_repo_settings(repo_id, private=True)
    assert api.model_info(repo_id).private is True
    api.move_repo(repo_id, repo_id + "-moved")
    assert not api.repo_exists(repo_id)
    assert api.model_info(repo_id + "-moved").private is True
