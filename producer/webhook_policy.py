"""Which webhook URLs a job may name: a guard against server-side request forgery (SSRF).

A webhook makes our workers POST to a URL a caller chose. Without this check a caller could
aim them at the cloud metadata service (169.254.169.254), the broker's management port or any
host on the private network, so URLs whose host resolves to a private, loopback, link-local,
multicast, reserved or unspecified address are refused at submit unless the settings allow it.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from infermq.errors import WebhookUrlRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def is_public_address(address: IPAddress) -> bool:
    """True for an address on the public internet (a pure decision, no I/O)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (an IP literal resolves to itself).

    Raises:
        WebhookUrlRefused: the name does not resolve.
    """
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise WebhookUrlRefused(f"webhook host {host!r} does not resolve ({e}): check the URL")\
            from e
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def check_webhook_url(url: str, allow_private: bool) -> None:
    """Refuses a webhook URL that is not http(s) or that reaches a non-public address.

    Every address the host resolves to must be public: one private answer is enough for a
    DNS-rebinding attacker to win. The worker delivers to whatever the name resolves to later,
    so this narrows the door rather than closing it; networks that must be sure also egress
    webhooks through a proxy that enforces the same rule.

    Raises:
        WebhookUrlRefused: the URL is malformed or reaches a refused address.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookUrlRefused(f"webhook URL {url!r} must be http(s)://host/...")
    if allow_private:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    refused = [str(a) for a in resolve_host(parts.hostname, port) if not is_public_address(a)]
    if refused:
        raise WebhookUrlRefused(
            f"webhook URL {url!r} resolves to non-public address(es) {', '.join(refused)}; "
            "use a public URL, or set INFERMQ_WEBHOOK_ALLOW_PRIVATE=true for a trusted network"
        )
