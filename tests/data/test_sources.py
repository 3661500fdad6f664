"""fetch_sources with fake registry clients: layout, manifest, idempotence, filtering and errors."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import zipfile

import pytest

from talklora_hub.data import sources
from talklora_hub.data.cache import cache_root, sha256_file


def _fake_npm(source, dest):
    """What `npm pack` leaves: a .tgz whose members sit under package/."""
    with tarfile.open(dest / "pkg-1.0.0.tgz", "w:gz") as tar:
        for name, text in {"package/data/spam-1/00001.abc.txt": "mail", "package/data/spam-1/00001.abc.json": "{}",
                           "package/LICENSE": "Apache", "package/lib/index.js": "code"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))


def _fake_pip(source, dest):
    with zipfile.ZipFile(dest / "pkg-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("pkg/data.txt", "hello")


@pytest.fixture()
def fake_registries(monkeypatch):
    calls = []

    def record(fake):
        def download(source, dest):
            calls.append(source.name)
            fake(source, dest)
        return download

    monkeypatch.setitem(sources._DOWNLOADERS, "npm", record(_fake_npm))
    monkeypatch.setitem(sources._DOWNLOADERS, "pip", record(_fake_pip))
    return calls


def test_fetch_unpacks_records_and_is_idempotent(tmp_path, fake_registries):
    manifest = sources.fetch_sources(tmp_path, names=["spam-assassin", "gsm8k"], progress=False)
    spam = tmp_path / "sources/spam-assassin"
    # strip_prefix and keep patterns: the mail and LICENSE, not the .json twin nor the JS code.
    assert (spam / "data/spam-1/00001.abc.txt").read_text() == "mail"
    assert (spam / "LICENSE").is_file() and not (spam / "data/spam-1/00001.abc.json").exists() and not (spam / "lib").exists()
    assert (tmp_path / "sources/gsm8k/pkg/data.txt").read_text() == "hello"
    entry = manifest["sources"]["spam-assassin"]
    archive = tmp_path / "downloads/spam-assassin/pkg-1.0.0.tgz"
    assert entry["files"] == [{"name": archive.name, "sha256": sha256_file(archive), "size": archive.stat().st_size}]
    assert json.loads((tmp_path / "manifest.json").read_text())["sources"].keys() == {"spam-assassin", "gsm8k"}
    assert fake_registries == ["spam-assassin", "gsm8k"]

    sources.fetch_sources(tmp_path, names=["spam-assassin", "gsm8k"], progress=False)
    assert fake_registries == ["spam-assassin", "gsm8k"]  # second run: nothing downloaded

    # An unpacked folder lost (but archives kept): re-unpacked without downloading.
    (spam / ".complete").unlink()
    sources.fetch_sources(tmp_path, names=["spam-assassin"], progress=False)
    assert fake_registries == ["spam-assassin", "gsm8k"] and (spam / ".complete").is_file()

    sources.fetch_sources(tmp_path, names=["gsm8k"], force=True, progress=False)
    assert fake_registries == ["spam-assassin", "gsm8k", "gsm8k"]


def test_failing_client_gives_a_clear_error(tmp_path):
    source = sources.SOURCES["gsm8k"]
    failing = [sys.executable, "-c", "import sys; print('connection refused', file=sys.stderr); sys.exit(3)"]
    with pytest.raises(sources.SourceFetchError) as error:
        sources._run(source, failing, tmp_path, "Check the proxy.")
    message = str(error.value)
    assert "gsm8k" in message and "pip registry is unreachable" in message and "connection refused" in message and "Check the proxy." in message


def test_missing_client_and_unknown_names(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm here
    with pytest.raises(sources.SourceFetchError, match="`npm` is not on PATH"):
        sources.fetch_sources(tmp_path / "c", names=["sotu"], progress=False)
    with pytest.raises(ValueError, match="names: every source must be one of"):
        sources.fetch_sources(tmp_path / "c", names=["nope"], progress=False)


def test_cache_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("TALKLORA_HUB_CACHE", str(tmp_path / "env"))
    assert cache_root() == (tmp_path / "env").resolve()
    assert cache_root(tmp_path / "arg") == (tmp_path / "arg").resolve()
    monkeypatch.delenv("TALKLORA_HUB_CACHE")
    assert cache_root().name == "talklora_hub"
