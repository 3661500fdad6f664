"""push_folder through the real huggingface_hub client and the embedded Hub: one commit per push, none
when nothing changed, removed files deleted in that same commit, and a stale parent refused."""

import itertools
import os

import pytest
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError

from talklora_hub.publish.push import MAX_FILES_TO_COMMIT, push_folder

_names = itertools.count()


@pytest.fixture
def repo_id(hub):
    return f"{hub.user}/push-{next(_names)}"


@pytest.fixture
def folder(tmp_path):
    """A small model-like folder: a regular file, one in a subfolder, and an LFS one."""
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"a": 1}\n')
    (root / "sub" / "notes.txt").write_text("notes\n")
    (root / "model.safetensors").write_bytes(os.urandom(300_000))
    return root


def _files(api, repo_id):
    return set(api.list_repo_files(repo_id))


def _commits(api, repo_id):
    return [c.commit_id for c in api.list_repo_commits(repo_id)]


def test_identical_push_makes_no_commit(hub, folder, repo_id):
    api = hub.api()
    first = push_folder(folder, repo_id, api=api)
    assert first.changed and _files(api, repo_id) == {".gitattributes", "config.json", "sub/notes.txt",
                                                      "model.safetensors"}
    history = _commits(api, repo_id)
    again = push_folder(folder, repo_id, api=api)
    assert not again.changed and again.commit == first.commit and _commits(api, repo_id) == history


def test_changed_lfs_content_is_one_new_commit(hub, folder, repo_id):
    api = hub.api()
    first = push_folder(folder, repo_id, api=api)
    (folder / "model.safetensors").write_bytes(os.urandom(300_000))
    second = push_folder(folder, repo_id, api=api)
    assert second.changed and _commits(api, repo_id)[:2] == [second.commit, first.commit]


def test_removed_file_disappears_in_the_same_commit(hub, folder, repo_id):
    api = hub.api()
    first = push_folder(folder, repo_id, api=api)
    (folder / "sub" / "notes.txt").unlink()
    removed = push_folder(folder, repo_id, api=api, commit_message="drop notes")
    assert removed.changed and _commits(api, repo_id)[:2] == [removed.commit, first.commit]
    assert _files(api, repo_id) == {".gitattributes", "config.json", "model.safetensors"}

    (folder / "config.json").unlink()
    (folder / "tokenizer.json").write_text("{}\n")
    swapped = push_folder(folder, repo_id, api=api)
    assert _commits(api, repo_id)[:2] == [swapped.commit, removed.commit]
    assert _files(api, repo_id) == {".gitattributes", "tokenizer.json", "model.safetensors"}


class _RacedApi(HfApi):
    """An HfApi whose upload_folder loses a race: another writer commits just before it does."""

    def upload_folder(self, **kwargs):
        HfApi(endpoint=self.endpoint, token=self.token).upload_file(
            path_or_fileobj=b"theirs\n", path_in_repo="theirs.txt", repo_id=kwargs["repo_id"])
        return super().upload_folder(**kwargs)


def test_stale_parent_commit_is_refused_and_leaves_the_other_writers_revision(hub, folder, repo_id):
    api = hub.api()
    push_folder(folder, repo_id, api=api)
    (folder / "config.json").write_text('{"a": 2}\n')
    (folder / "sub" / "notes.txt").unlink()
    raced = _RacedApi(endpoint=hub.endpoint, token=hub.token)
    with pytest.raises(HfHubHTTPError) as error:
        push_folder(folder, repo_id, api=raced)
    assert error.value.response.status_code == 412
    theirs = _commits(api, repo_id)[0]
    assert api.repo_info(repo_id).sha == theirs  # nothing of ours on top of the other writer's commit
    assert _files(api, repo_id) == {".gitattributes", "config.json", "sub/notes.txt", "model.safetensors",
                                    "theirs.txt"}
    config = api.hf_hub_download(repo_id, "config.json", cache_dir=folder.parent / "cache")
    assert open(config).read() == '{"a": 1}\n'


@pytest.mark.parametrize("xet", [True, False], ids=["xet", "no-xet"])
def test_a_folder_beyond_the_streamed_bounds_goes_up_as_one_commit(hub, folder, repo_id, monkeypatch, xet):
    """With hf_xet, a change beyond upload_folder's one-commit bounds goes up as one create_commit; without
    it, upload_folder itself sends one commit whatever the folder's size. Either way: one commit."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", not xet)
    api = hub.api()
    first = push_folder(folder, repo_id, api=api)
    (folder / "sub" / "notes.txt").unlink()
    for index in range(MAX_FILES_TO_COMMIT + 1):
        (folder / f"part-{index}.txt").write_text(f"{index}\n")
    second = push_folder(folder, repo_id, api=api)
    assert second.changed and _commits(api, repo_id)[:2] == [second.commit, first.commit]
    assert "sub/notes.txt" not in _files(api, repo_id) and len(_files(api, repo_id)) == 3 + MAX_FILES_TO_COMMIT + 1
    assert not push_folder(folder, repo_id, api=api).changed


def test_files_upload_folder_skips_do_not_count_as_changes(hub, folder, repo_id):
    """upload_folder never sends .git/ or its own .cache/huggingface/: they must not make a push look changed."""
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "download.lock").write_text("")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    api = hub.api()
    first = push_folder(folder, repo_id, api=api)
    assert not any(path.startswith((".git/", ".cache/")) for path in _files(api, repo_id))
    assert push_folder(folder, repo_id, api=api).commit == first.commit
