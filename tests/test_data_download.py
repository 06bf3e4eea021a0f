"""Downloading IDX files, against an HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial

import numpy as np
import pytest

from numpyvae.app.data import DataNotFoundError, DownloadError, load_dataset, write_idx
from numpyvae.app.data import download as dl

FILES = dl.IDX_FILES


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1; yields (base URL, folder, list of requested paths)."""
    root = tmp_path / "www"
    root.mkdir()
    requests = []

    class Handler(_QuietHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=root))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", root, requests
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMPYVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NUMPYVAE_DATA", raising=False)
    # No test here may reach a real mirror: replace every known source.
    for name in list(dl.SOURCES):
        monkeypatch.setitem(dl.SOURCES, name, dl.Source(mirrors=("http://127.0.0.1:9/",)))


def publish(folder, n_train=10, n_test=4):
    """Write the four files into ``folder``; return (arrays, sha256 by file name, md5 by name)."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    sha, md5 = {}, {}
    for role, array in arrays.items():
        path = write_idx(folder / FILES[role], array)
        sha[FILES[role]] = hashlib.sha256(path.read_bytes()).hexdigest()
        md5[FILES[role]] = hashlib.md5(path.read_bytes()).hexdigest()
    return arrays, sha, md5


def test_download_file_verifies_and_writes(server, tmp_path):
    url, root, _ = server
    payload = b"x" * 100_000
    (root / "blob").write_bytes(payload)
    good = hashlib.sha256(payload).hexdigest()
    path = dl.download_file(url + "blob", tmp_path / "out" / "blob", sha256=good,
                            md5=hashlib.md5(payload).hexdigest(), progress=False)
    assert path.read_bytes() == payload


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    url, root, _ = server
    (root / "blob").write_bytes(b"tampered")
    dest = tmp_path / "out" / "blob"
    with pytest.raises(DownloadError, match="sha256 checksum mismatch"):
        dl.download_file(url + "blob", dest, sha256="0" * 64, progress=False)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no temporary file left behind


def test_http_error_is_a_download_error(server, tmp_path):
    url, _, _ = server
    with pytest.raises(DownloadError, match="404"):
        dl.download_file(url + "missing", tmp_path / "x", progress=False)
    assert issubclass(DownloadError, FileNotFoundError)


def test_load_dataset_downloads_into_the_cache(server, tmp_path, monkeypatch):
    url, root, requests = server
    arrays, sha, md5 = publish(root)
    monkeypatch.setitem(dl.SOURCES, "mnist", dl.Source(mirrors=(url,), sha256=sha, md5=md5))
    ds = load_dataset("mnist", progress=False)
    assert sorted(requests) == sorted("/" + f for f in FILES.values())
    np.testing.assert_array_equal(ds.y_train, arrays["train_labels"])
    assert ds.x_train.shape == (10, 784)
    cache = tmp_path / "cache" / "mnist"
    assert ds.source == str(cache)
    for filename in FILES.values():
        assert (cache / filename).read_bytes() == (root / filename).read_bytes()
    # A second load finds the files and downloads nothing.
    requests.clear()
    load_dataset("mnist", progress=False)
    assert requests == []


def test_download_into_data_dir_and_fall_back_to_second_mirror(server, tmp_path, monkeypatch):
    url, root, requests = server
    _, sha, md5 = publish(root / "good")
    (root / "bad").mkdir()
    for filename in FILES.values():  # the first mirror serves corrupt copies
        (root / "bad" / filename).write_bytes(b"corrupt")
    monkeypatch.setitem(dl.SOURCES, "fashion-mnist",
                        dl.Source(mirrors=(url + "bad/", url + "good/"), sha256=sha, md5=md5))
    target = tmp_path / "mine"
    target.mkdir()  # a data folder must exist: a missing one is a typo, not a download target
    ds = load_dataset("fashion-mnist", target, progress=False)
    assert len(ds.x_train) == 10 and ds.source == str(target)
    assert sum(r.startswith("/bad/") for r in requests) == 4
    assert sum(r.startswith("/good/") for r in requests) == 4


def test_only_missing_files_are_downloaded(server, tmp_path, monkeypatch):
    url, root, requests = server
    _, sha, md5 = publish(root)
    cache = tmp_path / "cache" / "mnist"
    cache.mkdir(parents=True)
    for filename in list(FILES.values())[:3]:
        (cache / filename).write_bytes((root / filename).read_bytes())
    monkeypatch.setitem(dl.SOURCES, "mnist", dl.Source(mirrors=(url,), sha256=sha, md5=md5))
    load_dataset("mnist", progress=False)
    assert requests == ["/t10k-labels-idx1-ubyte.gz"]


def test_every_mirror_failing_is_reported(server, monkeypatch):
    url, root, _ = server
    monkeypatch.setitem(dl.SOURCES, "mnist", dl.Source(mirrors=(url + "a/", url + "b/")))
    with pytest.raises(DownloadError) as info:
        load_dataset("mnist", progress=False)
    message = str(info.value)
    assert "could not download train-images-idx3-ubyte.gz" in message
    assert url + "a/" in message and url + "b/" in message and "--data-dir" in message


def test_no_download_forbids_it(server, monkeypatch):
    url, root, requests = server
    _, sha, md5 = publish(root)
    monkeypatch.setitem(dl.SOURCES, "mnist", dl.Source(mirrors=(url,), sha256=sha, md5=md5))
    with pytest.raises(DataNotFoundError, match="downloading is switched off"):
        load_dataset("mnist", download=False)
    assert requests == []


def test_known_checksums_are_well_formed():
    # (The module's own table, not the monkeypatched one.)
    import importlib

    fresh = importlib.reload(dl)
    try:
        for name in ("mnist", "fashion-mnist"):
            source = fresh.SOURCES[name]
            assert source.mirrors and all(m.endswith("/") for m in source.mirrors)
            assert set(source.sha256) == set(FILES.values()) == set(source.md5)
            assert all(len(h) == 64 for h in source.sha256.values())
            assert all(len(h) == 32 for h in source.md5.values())
    finally:
        importlib.reload(dl)
