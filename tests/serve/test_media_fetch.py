"""Safe media loading: data URLs, media_dir confinement, remote fetching only to public addresses."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lmforge.serve.media_fetch import MediaError, MediaPolicy, is_public_address, load_media

OPENED: list[str] = []
_WATCHING = threading.Event()


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _WATCHING.is_set() and isinstance(args[0], str):
        OPENED.append(args[0])


sys.addaudithook(_audit)  # records every file the interpreter opens while a test watches


def load(url, **policy):
    return asyncio.run(load_media(url, MediaPolicy(**policy)))


def test_data_urls_decode_and_are_bounded():
    payload = b"\x89PNG fake image bytes"
    url = "data:image/png;base64," + base64.b64encode(payload).decode()
    assert load(url) == payload
    with pytest.raises(MediaError, match="byte limit"):
        load(url, max_bytes=4)
    with pytest.raises(MediaError, match="not valid base64"):
        load("data:image/png;base64,@@@")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "/etc/passwd", "file:///etc/../etc/passwd"])
def test_local_paths_are_refused_without_opening_the_file(url, tmp_path):
    OPENED.clear()
    _WATCHING.set()
    try:
        with pytest.raises(MediaError, match="disabled"):
            load(url)
        with pytest.raises(MediaError, match="outside the allowed media_dir"):
            load(url, media_dir=tmp_path)
    finally:
        _WATCHING.clear()
    assert not [p for p in OPENED if "passwd" in p]


def test_media_dir_allows_its_own_files_only(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    (media / "cat.png").write_bytes(b"cat")
    (tmp_path / "secret.txt").write_text("secret")
    (media / "link.png").symlink_to(tmp_path / "secret.txt")
    OPENED.clear()
    _WATCHING.set()
    try:
        assert load(str(media / "cat.png"), media_dir=media) == b"cat"
    finally:
        _WATCHING.clear()
    assert str(media / "cat.png") in OPENED  # the audit hook does see the opens it is meant to catch
    assert load("cat.png", media_dir=media) == b"cat"
    assert load(f"file://{media / 'cat.png'}", media_dir=media) == b"cat"
    for sneaky in ("../secret.txt", str(media / "link.png"), str(media / ".." / "secret.txt")):
        with pytest.raises(MediaError, match="outside"):
            load(sneaky, media_dir=media)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("2606:4700::1111", True),
    ],
)
def test_public_address_rule(address, public):
    assert is_public_address(ipaddress.ip_address(address)) is public


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path == "/image.png":
            body = b"remote image"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/big":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"x" * 5000)
        elif self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.path.split("to=", 1)[1])
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def local_server():
    """A real HTTP server on 127.0.0.2 (the tests below treat that one address as public)."""
    httpd = ThreadingHTTPServer(("127.0.0.2", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.2:{httpd.server_address[1]}"
    httpd.shutdown()


def only_127_0_0_2(ip):
    return str(ip) == "127.0.0.2"


def test_remote_media_needs_allow_remote_media(local_server):
    with pytest.raises(MediaError, match="disabled"):
        load(f"{local_server}/image.png")


def test_remote_media_is_fetched_from_an_allowed_address(local_server):
    assert (
        load(f"{local_server}/image.png", allow_remote=True, address_allowed=only_127_0_0_2)
        == b"remote image"
    )
    with pytest.raises(MediaError, match="byte limit"):
        load(f"{local_server}/big", allow_remote=True, address_allowed=only_127_0_0_2, max_bytes=1000)
    with pytest.raises(MediaError, match="HTTP 404"):
        load(f"{local_server}/missing", allow_remote=True, address_allowed=only_127_0_0_2)


def test_loopback_and_metadata_addresses_are_refused(local_server):
    port = local_server.rsplit(":", 1)[1]
    for url in (
        f"http://127.0.0.1:{port}/image.png",
        "http://169.254.169.254/latest/meta-data/",
        f"http://localhost:{port}/image.png",
        "http://[::1]/x",
    ):
        with pytest.raises(MediaError, match="non-public address"):
            load(url, allow_remote=True)


def test_redirects_are_checked_again(local_server):
    port = local_server.rsplit(":", 1)[1]
    target = f"http://127.0.0.1:{port}/image.png"  # the same server, but through a forbidden address
    with pytest.raises(MediaError, match="non-public address"):
        load(f"{local_server}/redirect?to={target}", allow_remote=True, address_allowed=only_127_0_0_2)
    ok = f"{local_server}/redirect?to={local_server}/image.png"
    assert load(ok, allow_remote=True, address_allowed=only_127_0_0_2) == b"remote image"
    with pytest.raises(MediaError, match="unsupported"):
        load(
            f"{local_server}/redirect?to=file:///etc/passwd",
            allow_remote=True,
            address_allowed=only_127_0_0_2,
        )
