"""How a webhook is signed, so that a receiver can check it came from us and is fresh.

``X-Infermq-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``. The
timestamp is inside the signed text, so a captured request cannot be replayed later with a new
time; receivers refuse signatures older than a few minutes. Pure functions, no I/O: receivers
import this module alone.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Infermq-Signature"


def sign(secret: str, timestamp_s: int, body: bytes) -> str:
    """The header value for ``body`` sent at ``timestamp_s``."""
    signed = f"{timestamp_s}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp_s},v1={digest}"


def verify(secret: str, header: str, body: bytes, now_s: float, tolerance_s: float = 300) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and is at most ``tolerance_s`` old."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp_s = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now_s - timestamp_s) > tolerance_s:
        return False
    expected = sign(secret, timestamp_s, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))
