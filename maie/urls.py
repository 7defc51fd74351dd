"""Outbound URLs a tenant chooses (a webhook's callback_url, an audio http(s) URL): never to this
machine or its cloud's metadata service.

Loopback, link-local (169.254.0.0/16 — where metadata services live — and fe80::/10), unspecified,
multicast and reserved addresses are refused, as are the metadata services' host names, unless a
network is listed in ALLOWED_INTERNAL_NETWORKS. Private addresses (in-cluster services) are allowed.
A host name is resolved when `resolve` is set (and every address it resolves to must pass).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from maie.errors import MaieError
from maie.settings import Settings

_METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data"}


class UrlRefused(MaieError):
    code = "url_refused"


def _refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return bool(
        address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_multicast
        or address.is_reserved
        or (
            isinstance(address, ipaddress.IPv6Address)
            and address.ipv4_mapped
            and _refused(address.ipv4_mapped)
        )
    )


def check_outbound_url(url: str, settings: Settings, *, what: str = "the URL", resolve: bool = True) -> None:
    """Raise UrlRefused when the URL may not be called (scheme, host, or where it resolves)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlRefused(f"{what} must be an http(s) URL with a host: {url[:200]}")
    host = parts.hostname.lower().rstrip(".")
    try:
        port = parts.port
        host.encode("idna")  # what resolving and connecting will do with it
    except (ValueError, UnicodeError):  # UnicodeError is a ValueError; named for the reader
        raise UrlRefused(f"{what} has no valid host name and port: {url[:200]!r}") from None
    allowed = [ipaddress.ip_network(n, strict=False) for n in settings.allowed_internal_networks]
    if host in _METADATA_HOSTS and not allowed:
        raise UrlRefused(f"{what} points at a cloud metadata service: {host}")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        if not resolve:
            return
        try:
            infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise UrlRefused(f"{what} host {host} does not resolve ({exc.strerror})") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        if _refused(address) and not any(address in net for net in allowed):
            raise UrlRefused(
                f"{what} {host} resolves to {address}, a loopback, link-local or metadata address; "
                "list its network in ALLOWED_INTERNAL_NETWORKS to allow it"
            )
