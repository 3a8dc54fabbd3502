"""Webhook signatures: what a receiver accepts and what it rejects."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from vamu_tasks.notify.signing import DEFAULT_TOLERANCE_S, SignatureError, sign, verify_signature

SECRET = "whsec-test-secret"
BODY = b'{"id":"e1","event":"inspiration-ready","userId":"u-ada","data":{"jobId":"j1"}}'
NOW = 1_790_000_000


def test_a_signed_body_verifies_and_gives_back_its_timestamp() -> None:
    header = sign(BODY, SECRET, NOW)

    assert verify_signature(BODY, header, SECRET, now=NOW + 5) == NOW


def test_the_signature_is_an_hmac_sha256_of_timestamp_dot_body_that_any_receiver_can_check() -> (
    None
):
    header = sign(BODY, SECRET, NOW)

    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={NOW},v1={expected}"


def test_sign_uses_the_current_time_by_default() -> None:
    header = sign(BODY, SECRET)

    assert re.fullmatch(r"t=\d{10},v1=[0-9a-f]{64}", header)
    verify_signature(BODY, header, SECRET)


def test_a_forged_body_is_rejected() -> None:
    header = sign(BODY, SECRET, NOW)
    forged = BODY.replace(b"u-ada", b"u-eve")

    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(forged, header, SECRET, now=NOW)


def test_a_signature_made_with_another_secret_is_rejected() -> None:
    header = sign(BODY, "another-secret", NOW)

    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(BODY, header, SECRET, now=NOW)


def test_a_timestamp_changed_after_signing_is_rejected() -> None:
    mac = sign(BODY, SECRET, NOW).split("v1=")[1]

    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(BODY, f"t={NOW + 60},v1={mac}", SECRET, now=NOW + 60)


def test_a_signature_at_the_edge_of_the_tolerance_is_accepted() -> None:
    header = sign(BODY, SECRET, NOW)

    assert verify_signature(BODY, header, SECRET, now=NOW + DEFAULT_TOLERANCE_S) == NOW
    assert verify_signature(BODY, header, SECRET, now=NOW - DEFAULT_TOLERANCE_S) == NOW


def test_an_old_signature_is_rejected_as_a_replay() -> None:
    header = sign(BODY, SECRET, NOW)

    with pytest.raises(SignatureError, match="tolerance"):
        verify_signature(BODY, header, SECRET, now=NOW + DEFAULT_TOLERANCE_S + 1)


def test_a_signature_from_the_future_is_rejected() -> None:
    header = sign(BODY, SECRET, NOW + DEFAULT_TOLERANCE_S + 1)

    with pytest.raises(SignatureError, match="tolerance"):
        verify_signature(BODY, header, SECRET, now=NOW)


def test_the_tolerance_can_be_tightened() -> None:
    header = sign(BODY, SECRET, NOW)

    with pytest.raises(SignatureError, match="10s tolerance"):
        verify_signature(BODY, header, SECRET, now=NOW + 11, tolerance_s=10)


@pytest.mark.parametrize("header", [None, ""])
def test_a_missing_header_is_rejected(header: str | None) -> None:
    with pytest.raises(SignatureError, match="Missing X-Vamu-Signature"):
        verify_signature(BODY, header, SECRET, now=NOW)


@pytest.mark.parametrize(
    "header",
    ["garbage", "v1=abc", f"t=soon,v1={'0' * 64}", f"t=,v1={'0' * 64}", "t=1.5e9,v1=00"],
)
def test_a_header_without_a_valid_timestamp_is_rejected(header: str) -> None:
    with pytest.raises(SignatureError, match="t=<unix time>"):
        verify_signature(BODY, header, SECRET, now=NOW)


def test_a_header_without_a_signature_is_rejected() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(BODY, f"t={NOW}", SECRET, now=NOW)


def test_any_one_matching_v1_value_is_enough_so_secrets_can_be_rotated() -> None:
    old = sign(BODY, "old-secret", NOW).split("v1=")[1]
    new = sign(BODY, SECRET, NOW).split("v1=")[1]

    assert verify_signature(BODY, f"t={NOW},v1={old},v1={new}", SECRET, now=NOW) == NOW
    assert verify_signature(BODY, f"t={NOW}, v1={new}, v1={old}", SECRET, now=NOW) == NOW


def test_several_v1_values_none_matching_are_rejected() -> None:
    wrong = sign(BODY, "old-secret", NOW).split("v1=")[1]

    with pytest.raises(SignatureError):
        verify_signature(BODY, f"t={NOW},v1={wrong},v1={'f' * 64}", SECRET, now=NOW)
