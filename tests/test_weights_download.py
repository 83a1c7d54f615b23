"""The download path against a local HTTP server: good file, wrong hash, truncated transfer,
server gone. Nothing half-written ever sits under the final name."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import socket
import threading

import pytest

from cnnzoo.weights import WeightsError, cached_path, download, get_weights, load_pretrained

BODY = b"weights-bytes" * 5000


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = BODY
        self.send_response(200)
        if "truncated" in self.path:  # announce more than is sent, then hang up
            self.send_header("Content-Length", str(len(body) * 2))
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CNNZOO_WEIGHTS_BASE_URL", raising=False)
    return tmp_path / "home" / "weights"


def entry_named(name: str, sha: str | None):
    base = get_weights("resnet20_cifar.akamaster")
    return dataclasses.replace(base, tag=f"resnet20_cifar.{name}", url=f"https://example.invalid/{name}.th", sha256=sha)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_file_is_verified_and_renamed_into_place(server, cache, monkeypatch):
    entry = entry_named("good", hashlib.sha256(BODY).hexdigest()[:8])
    monkeypatch.setenv("CNNZOO_WEIGHTS_BASE_URL", server)
    path = download(entry, progress=False)
    assert path == cached_path(entry) and path.read_bytes() == BODY
    assert leftovers(cache) == [path.name]


def test_wrong_hash_leaves_nothing(server, cache):
    entry = entry_named("badhash", "00000000")
    with pytest.raises(WeightsError, match="does not start with the published 00000000"):
        download(entry, base_url=server, progress=False)
    assert leftovers(cache) == []


def test_truncated_transfer_leaves_nothing(server, cache):
    entry = entry_named("truncated", None)
    with pytest.raises(WeightsError, match="truncated|cut short|failed"):
        download(entry, base_url=server, progress=False)
    assert leftovers(cache) == []


def test_server_gone_is_one_line_with_the_path(cache):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry = entry_named("gone", None)
    with pytest.raises(WeightsError) as err:
        download(entry, base_url=f"http://127.0.0.1:{port}", progress=False, timeout=5)
    assert "\n" not in str(err.value) and str(cached_path(entry)) in str(err.value)
    assert leftovers(cache) == []


def test_missing_file_names_the_url_and_the_place_to_put_it(cache):
    from cnnzoo import create_model

    entry = get_weights("resnet20_cifar.akamaster")
    with pytest.raises(WeightsError) as err:
        load_pretrained(create_model("resnet20_cifar"), entry.tag, arch="resnet20_cifar")
    assert entry.url in str(err.value) and str(cached_path(entry)) in str(err.value)
