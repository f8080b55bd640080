"""Load the images, audio and video a request refers to, without letting it reach what it should not.

- ``data:`` URLs are always accepted (bounded in size).
- Local paths (``/x``, ``file://``) only under the configured ``media_dir``; the path is
  resolved (symlinks and ``..`` included) and checked *before* anything is opened.
- ``http(s)`` only with ``allow_remote_media: true``, and never to loopback, private,
  link-local, multicast, reserved or cloud-metadata addresses. The host is resolved once,
  every address it resolves to is checked, and the connection goes to the checked address
  (so a second DNS answer cannot swap in another); each redirect is checked again. Size and
  time are bounded, and all of it runs without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
REDIRECT_CODES = (301, 302, 303, 307, 308)


class MediaError(Exception):
    """A media reference the server refuses or cannot load (answered as HTTP 400)."""


def is_public_address(ip: IpAddress) -> bool:
    """True only for globally routable unicast addresses (IPv4-mapped IPv6 judged as IPv4)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local)


@dataclass
class MediaPolicy:
    media_dir: Path | None = None
    allow_remote: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout_s: float = 10.0
    max_redirects: int = 3
    address_allowed: Callable[[IpAddress], bool] = is_public_address


async def load_media(url: str, policy: MediaPolicy) -> bytes:
    """The bytes ``url`` refers to, or :class:`MediaError` saying why not."""
    url = url.strip()
    scheme = urlsplit(url).scheme.lower() if "://" in url or url.startswith("data:") else ""
    if scheme == "data":
        return decode_data_url(url, policy.max_bytes)
    if scheme in ("http", "https"):
        if not policy.allow_remote:
            raise MediaError("remote media URLs are disabled on this server (allow_remote_media: false)")
        try:  # an overall bound too: a server that drips bytes must not hold the request forever
            return await asyncio.wait_for(fetch_remote(url, policy), timeout=policy.timeout_s * 2)
        except TimeoutError:
            raise MediaError(f"fetching media took longer than {policy.timeout_s * 2:g} s") from None
    if scheme == "file" or scheme == "":
        path = unquote(urlsplit(url).path) if scheme == "file" else url
        return await read_local(path, policy)
    raise MediaError(
        f"unsupported media URL scheme {scheme!r} (use data:, a path under media_dir, or http(s))"
    )


def decode_data_url(url: str, max_bytes: int) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep:
        raise MediaError("malformed data: URL (no comma)")
    if len(payload) * 3 // 4 > max_bytes:
        raise MediaError(f"media larger than the {max_bytes} byte limit")
    if header.endswith(";base64"):
        return decode_base64(payload, max_bytes)
    return unquote(payload).encode()


def decode_base64(payload: str, max_bytes: int) -> bytes:
    if len(payload) * 3 // 4 > max_bytes:
        raise MediaError(f"media larger than the {max_bytes} byte limit")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise MediaError("media data is not valid base64") from None


def allowed_local_path(path: str, media_dir: Path | None) -> Path:
    """The resolved path if it lies inside ``media_dir``; decided without opening anything."""
    if media_dir is None:
        raise MediaError("local media paths are disabled on this server (set media_dir to allow a folder)")
    root = Path(os.path.realpath(media_dir))
    candidate = Path(path) if os.path.isabs(path) else root / path
    resolved = Path(os.path.realpath(candidate))
    if resolved != root and root not in resolved.parents:
        raise MediaError(f"media path {path!r} is outside the allowed media_dir")
    return resolved


async def read_local(path: str, policy: MediaPolicy) -> bytes:
    resolved = allowed_local_path(path, policy.media_dir)

    def read() -> bytes:
        if not resolved.is_file():
            raise MediaError(f"media file {path!r} not found under media_dir")
        if resolved.stat().st_size > policy.max_bytes:
            raise MediaError(f"media file {path!r} is larger than the {policy.max_bytes} byte limit")
        return resolved.read_bytes()

    return await asyncio.to_thread(read)


async def _checked_address(host: str, port: int, policy: MediaPolicy) -> IpAddress:
    """Resolve ``host`` and return one address, refusing if *any* answer is not allowed."""
    loop = asyncio.get_running_loop()
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
        addresses: list[IpAddress] = [literal]
    except ValueError:
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=policy.timeout_s
            )
        except (TimeoutError, OSError):
            raise MediaError(f"cannot resolve media host {host!r}") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise MediaError(f"cannot resolve media host {host!r}")
    for address in addresses:
        if not policy.address_allowed(address):
            raise MediaError(f"media host {host!r} resolves to a non-public address; refused")
    return addresses[0]


async def fetch_remote(url: str, policy: MediaPolicy) -> bytes:
    timeout = httpx.Timeout(policy.timeout_s)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _hop in range(policy.max_redirects + 1):
            parts = httpx.URL(url)
            if parts.scheme not in ("http", "https") or not parts.host:
                raise MediaError(f"media redirect to an unsupported URL {url!r}; refused")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = await _checked_address(parts.host, port, policy)
            pinned = parts.copy_with(host=str(address))
            headers = {"Host": parts.netloc.decode("ascii")}
            extensions = {"sni_hostname": parts.host} if parts.scheme == "https" else {}
            try:
                async with client.stream("GET", pinned, headers=headers, extensions=extensions) as response:
                    if response.status_code in REDIRECT_CODES:
                        location = response.headers.get("location")
                        if not location:
                            raise MediaError("media URL redirected without a Location")
                        url = urljoin(url, location)
                        continue
                    if response.status_code != 200:
                        raise MediaError(f"fetching media failed: HTTP {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                        raise MediaError(f"media larger than the {policy.max_bytes} byte limit")
                    body = bytearray()
                    async for piece in response.aiter_bytes():
                        body += piece
                        if len(body) > policy.max_bytes:
                            raise MediaError(f"media larger than the {policy.max_bytes} byte limit")
                    return bytes(body)
            except httpx.TimeoutException:
                raise MediaError(f"fetching media timed out after {policy.timeout_s:g} s") from None
            except httpx.HTTPError as exc:
                raise MediaError(f"fetching media failed: {type(exc).__name__}") from None
        raise MediaError(f"media URL redirected more than {policy.max_redirects} times")
