"""Fetching a clip-retrieval ``image_url`` without letting a client reach what the server can reach.

The host must be listed in ``XMODAL_IMAGE_URL_ALLOW``; its name is resolved here, every address it resolves to
must be public (loopback, private, link-local, multicast, reserved and unspecified addresses are refused unless
``XMODAL_IMAGE_URL_ALLOW_PRIVATE``), and the request goes to the checked address itself (the name travels only in
the Host header and TLS server name), so a second lookup cannot be steered elsewhere. No redirects; at most
``limit`` bytes and ``timeout_s`` seconds in all.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
from fastapi import HTTPException, status

from xmodal.config import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_internal(address: Address) -> bool:
    """Addresses a public fetch must never reach."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


async def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to (a literal address: itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"Could not resolve '{host}': {exc}") from exc
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


async def fetch_image(url: str, settings: Settings) -> bytes:
    """The bytes at ``url``, under the rules above; 403, 413 or 422 with the reason otherwise."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in {"http", "https"} or host not in settings.image_url_allow:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"This server does not fetch images from '{host or url}': allowed hosts are set with "
            "XMODAL_IMAGE_URL_ALLOW (empty: fetching is off). Send the image itself as base64 in 'image'.",
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = await resolve(host, port)
    internal = [str(address) for address in addresses if is_internal(address)]
    if internal and not settings.image_url_allow_private:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"'{host}' resolves to an internal address ({', '.join(internal)}); this server does not fetch from "
            "loopback, private, link-local or multicast addresses unless XMODAL_IMAGE_URL_ALLOW_PRIVATE is set.",
        )
    if not addresses:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"'{host}' resolves to no address.")
    address = addresses[0]
    shown = f"[{address}]" if address.version == 6 else str(address)
    pinned = urlunsplit((parts.scheme, f"{shown}:{port}", parts.path or "/", parts.query, ""))
    limit = settings.max_upload_bytes
    data = bytearray()
    try:
        with anyio.fail_after(settings.image_url_timeout_s):
            async with httpx.AsyncClient(timeout=settings.image_url_timeout_s, follow_redirects=False) as client:
                headers = {"Host": parts.netloc.rsplit("@", 1)[-1]}
                extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
                async with client.stream("GET", pinned, headers=headers, extensions=extensions) as response:
                    response.raise_for_status()
                    async for chunk in response.aiter_bytes():
                        data.extend(chunk)
                        if len(data) > limit:
                            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"The image is over {limit} bytes.")
    except TimeoutError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"Fetching the image took longer than {settings.image_url_timeout_s} s (XMODAL_IMAGE_URL_TIMEOUT_S).",
        ) from exc
    except httpx.HTTPError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"Could not fetch the image: {exc}") from exc
    return bytes(data)
