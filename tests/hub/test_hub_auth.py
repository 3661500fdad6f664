"""Authentication and permissions (bad tokens, foreign namespaces, private repos, read tokens,
organisations) and refusal of path traversal tricks."""

from __future__ import annotations

import base64

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from hub_test_utils import post_commit


def _status(error_info) -> int:
    return error_info.value.response.status_code


def test_bad_token_is_401(hub, api, repo_id):
    api.create_repo(repo_id)
    bogus = HfApi(endpoint=hub.endpoint, token="hf_not_a_real_token")
    with pytest.raises(HfHubHTTPError) as error:
        bogus.whoami()
    assert _status(error) == 401
    with pytest.raises(HfHubHTTPError) as error:
        bogus.model_info(repo_id)  # even for a public repo: a wrong token is an error, not anonymity
    assert _status(error) == 401 and not isinstance(error.value, RepositoryNotFoundError)
    anonymous = HfApi(endpoint=hub.endpoint, token=False)
    assert anonymous.model_info(repo_id).id == repo_id
    with pytest.raises(HfHubHTTPError) as error:
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert _status(error) == 401


def test_foreign_namespace_is_403(hub, api, repo_id):
    api.create_repo(repo_id)
    mallory = HfApi(endpoint=hub.endpoint, token=hub.create_user("mallory"))
    with pytest.raises(HfHubHTTPError) as error:
        mallory.create_repo(repo_id + "-by-mallory")
    assert _status(error) == 403
    with pytest.raises(HfHubHTTPError) as error:
        mallory.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert _status(error) == 403
    with pytest.raises(HfHubHTTPError) as error:
        mallory.delete_repo(repo_id)
    assert _status(error) == 403
    assert api.list_repo_files(repo_id) == [".gitattributes"]
    assert mallory.create_repo("mallory/own").repo_id == "mallory/own"


def test_private_repo_is_invisible(hub, api, repo_id, tmp_path):
    api.create_repo(repo_id, private=True)
    api.upload_file(path_or_fileobj=b"secret", path_in_repo="secret.txt", repo_id=repo_id)
    assert api.model_info(repo_id).private is True
    for token in (False, hub.create_user("eve")):
        other = HfApi(endpoint=hub.endpoint, token=token)
        with pytest.raises(RepositoryNotFoundError) as error:
            other.model_info(repo_id)
        assert _status(error) == 404
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(repo_id, "secret.txt", endpoint=hub.endpoint, token=token, cache_dir=tmp_path / "c")
        assert not other.repo_exists(repo_id)
        assert repo_id not in [m.id for m in other.list_models(author=hub.user)]
    assert repo_id in [m.id for m in api.list_models(author=hub.user)]


def test_read_token_and_organisations(hub, repo_name):
    reader = HfApi(endpoint=hub.endpoint, token=hub.create_token(hub.user, role="read"))
    assert reader.whoami()["auth"]["accessToken"]["role"] == "read"
    with pytest.raises(HfHubHTTPError) as error:
        reader.create_repo(repo_name)
    assert _status(error) == 403

    alice = HfApi(endpoint=hub.endpoint, token=hub.create_user("alice", orgs=["team"]))
    assert [org["name"] for org in alice.whoami()["orgs"]] == ["team"]
    alice.create_repo(f"team/{repo_name}", private=True)
    alice.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=f"team/{repo_name}")
    bob = HfApi(endpoint=hub.endpoint, token=hub.create_user("bob", orgs=["team"]))
    assert bob.list_repo_files(f"team/{repo_name}") == [".gitattributes", "x.txt"]  # members see private repos
    with pytest.raises(HfHubHTTPError) as error:
        HfApi(endpoint=hub.endpoint, token=hub.token).create_repo(f"team/{repo_name}-2")
    assert _status(error) == 403


BAD_PATHS = ["../evil.txt", "/etc/passwd", "a/../../evil.txt", "a\\..\\evil.txt", "a\x00b", "./x", "a//b",
             ".git/config", "dir/..", ""]


@pytest.mark.parametrize("bad_path", BAD_PATHS)
def test_traversal_paths_are_refused(hub, api, repo_id, bad_path):
    api.create_repo(repo_id, exist_ok=True)
    header = {"key": "header", "value": {"summary": "evil"}}
    content = base64.b64encode(b"pwned").decode()
    response = post_commit(hub, repo_id, [header, {"key": "file", "value": {"path": bad_path, "content": content,
                                                                        "encoding": "base64"}}])
    assert response.status_code == 400, response.text
    response = post_commit(hub, repo_id, [header, {"key": "deletedFile", "value": {"path": bad_path}}])
    assert response.status_code in (400, 404) if bad_path == "" else response.status_code == 400
    assert api.list_repo_files(repo_id) == [".gitattributes"]
    assert not (hub.root.parent / "evil.txt").exists() and not (hub.root / "evil.txt").exists()


@pytest.mark.parametrize("url_path", [
    "resolve/main/..%2F..%2F..%2Fauth%2Fdefault_token.json",
    "resolve/main/%2E%2E/%2E%2E/auth/default_token.json",
    "resolve/main/a%5C..%5Cb",
    "resolve/main/a%00b",
])
def test_traversal_in_download_urls(hub, api, repo_id, url_path):
    api.create_repo(repo_id, exist_ok=True)
    response = httpx.get(f"{hub.endpoint}/{repo_id}/{url_path}")
    assert response.status_code == 400
    assert hub.token not in response.text


def test_traversal_in_other_endpoints(hub, api, repo_id):
    api.create_repo(repo_id)
    auth = {"authorization": f"Bearer {hub.token}"}
    base = f"{hub.endpoint}/api/models/{repo_id}"
    assert httpx.post(f"{base}/paths-info/main", data={"paths": ["../x"]}, headers=auth).status_code == 400
    assert httpx.get(f"{base}/tree/main/..%2F..", headers=auth).status_code == 400
    assert httpx.post(f"{base}/preupload/main", json={"files": [{"path": "../x", "size": 1, "sample": ""}]},
                      headers=auth).status_code == 400
    for name in ("..", "a/b", "-x", "x--y", ".hidden"):
        response = httpx.post(f"{hub.endpoint}/api/repos/create", json={"name": name, "type": "model"}, headers=auth)
        assert response.status_code == 400, name
    assert httpx.get(f"{hub.endpoint}/api/models/..%2F..%2Fauth/x", headers=auth).status_code in (400, 404)
