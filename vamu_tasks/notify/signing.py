"""Webhook signatures: `X-Vamu-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`.

Receivers call `verify_signature` with the raw body; it rejects forged bodies and, through the
timestamp tolerance, replays of old deliveries.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Vamu-Signature"
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """The webhook signature is missing, malformed, wrong or too old."""


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def verify_signature(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Return the signed timestamp, or raise `SignatureError` saying what is wrong."""
    if not header:
        raise SignatureError(f"Missing {SIGNATURE_HEADER} header.")
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        raise SignatureError("Signature header has no valid t=<unix time>.") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError(f"Signature timestamp is outside the {tolerance_s}s tolerance.")
    expected = sign(body, secret, timestamp).split("v1=", 1)[1]
    if not any(hmac.compare_digest(expected, given) for given in fields.get("v1", [])):
        raise SignatureError("Signature does not match the body.")
    return timestamp
