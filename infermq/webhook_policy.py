"""Which webhook URLs a job may name: a guard against server-side request forgery (SSRF).

A webhook makes our workers POST to a URL a caller chose. Without this check a caller could
aim them at the cloud metadata service (169.254.169.254), the broker's management port or any
host on the private network, so URLs whose host resolves to a private, loopback, link-local,
multicast, reserved or unspecified address are refused at submit unless the settings allow it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

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
    _checked_addresses(url, allow_private)


@dataclass(frozen=True)
class PinnedTarget:
    """Where one delivery connects: the checked address, with the name it was resolved from
    (sent as ``Host`` and, for https, as the TLS server name, so certificates still verify)."""

    url: str  # the webhook URL with its host replaced by the checked address
    host_header: str
    server_name: str


def pin_webhook_target(url: str, allow_private: bool) -> PinnedTarget:
    """Resolves the webhook's host now, checks every address as at submit, and names the one
    address the delivery must connect to.

    DNS can change after submit (a rebinding attacker answers a public address to the check,
    then a private one): checking again at delivery and connecting to the very address checked
    leaves no second lookup to win.

    Raises:
        WebhookUrlRefused: the URL is malformed or now reaches a refused address.
    """
    check_webhook_url(url, allow_private=True)  # the shape; the addresses follow
    parts = urlsplit(url)
    host = str(parts.hostname)
    address = _checked_addresses(url, allow_private)[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    userinfo, _, host_and_port = parts.netloc.rpartition("@")
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    netloc = f"{userinfo}@{netloc}" if userinfo else netloc
    return PinnedTarget(url=urlunsplit(parts._replace(netloc=netloc)),
                        host_header=host_and_port, server_name=host)


def _checked_addresses(url: str, allow_private: bool) -> list[IPAddress]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = resolve_host(str(parts.hostname), port)
    refused = [str(a) for a in addresses if not allow_private and not is_public_address(a)]
    if refused:
        raise WebhookUrlRefused(
            f"webhook URL {url!r} resolves to non-public address(es) {', '.join(refused)}; "
            "use a public URL, or set INFERMQ_WEBHOOK_ALLOW_PRIVATE=true for a trusted network"
        )
    return addresses
