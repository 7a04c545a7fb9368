"""Standard Webhooks signing and verification, cross-checked with the reference library, and SecretBox."""

from __future__ import annotations

import base64
import doctest
import json
import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from cms.app.webhooks import signing
from cms.app.webhooks.signing import (
    SecretBox,
    WebhookVerificationError,
    new_secret,
    secret_key,
    sign,
    signature_headers,
    verify_webhook,
)

# The example secret from the Standard Webhooks specification (24 bytes).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = json.dumps({"type": "entry.published", "data": {"id": "e1", "title": "Grüße"}}).encode()
MSG_ID = "01HZZZEVENT0000000000000000"
NOW = 1_700_000_000


# ---------------------------------------------------------------------------------------------
# secrets


def test_new_secret_is_whsec_and_32_random_bytes() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(secret_key(first)) == 32
    assert base64.b64encode(secret_key(first)).decode() == first.removeprefix("whsec_")


def test_secret_key_decodes_the_part_after_the_prefix() -> None:
    assert secret_key(SPEC_SECRET) == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert secret_key(SPEC_SECRET.rstrip("=")) == secret_key(SPEC_SECRET)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
        "whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_",
        "whsec_" + base64.b64encode(b"x" * 23).decode(),  # too short
        "whsec_not base64 at all!",
        "whsec_" + base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(),  # URL-safe alphabet
    ],
)
def test_secret_key_rejects_malformed_secrets(bad: str) -> None:
    with pytest.raises(ValueError):
        secret_key(bad)


# ---------------------------------------------------------------------------------------------
# signing and verifying


def test_sign_matches_a_hand_computed_hmac() -> None:
    import hashlib
    import hmac

    digest = hmac.new(secret_key(SPEC_SECRET), f"{MSG_ID}.{NOW}.".encode() + BODY, hashlib.sha256).digest()
    assert sign(SPEC_SECRET, MSG_ID, NOW, BODY) == "v1," + base64.b64encode(digest).decode()


def test_round_trip() -> None:
    secret = new_secret()
    headers = signature_headers(MSG_ID, NOW, BODY, [secret])
    assert headers == {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(NOW),
        "webhook-signature": sign(secret, MSG_ID, NOW, BODY),
    }
    verify_webhook(headers, BODY, secret, now=NOW)


def test_header_names_are_case_insensitive() -> None:
    secret = new_secret()
    headers = {name.title(): value for name, value in signature_headers(MSG_ID, NOW, BODY, [secret]).items()}
    verify_webhook(headers, BODY, secret, now=NOW)


def test_rotation_sends_two_signatures_and_either_secret_verifies() -> None:
    current, previous = new_secret(), new_secret()
    headers = signature_headers(MSG_ID, NOW, BODY, [current, previous])
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    verify_webhook(headers, BODY, current, now=NOW)
    verify_webhook(headers, BODY, previous, now=NOW)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, BODY, new_secret(), now=NOW)


def test_signing_needs_a_secret() -> None:
    with pytest.raises(ValueError):
        signature_headers(MSG_ID, NOW, BODY, [])


def test_tampered_body_fails() -> None:
    secret = new_secret()
    headers = signature_headers(MSG_ID, NOW, BODY, [secret])
    with pytest.raises(WebhookVerificationError, match="no webhook-signature matches"):
        verify_webhook(headers, BODY + b" ", secret, now=NOW)


def test_tampered_id_or_timestamp_fails() -> None:
    secret = new_secret()
    headers = signature_headers(MSG_ID, NOW, BODY, [secret])
    with pytest.raises(WebhookVerificationError):
        verify_webhook({**headers, "webhook-id": "other"}, BODY, secret, now=NOW)
    with pytest.raises(WebhookVerificationError):
        verify_webhook({**headers, "webhook-timestamp": str(NOW + 1)}, BODY, secret, now=NOW)


def test_wrong_secret_fails() -> None:
    headers = signature_headers(MSG_ID, NOW, BODY, [new_secret()])
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, BODY, new_secret(), now=NOW)


@pytest.mark.parametrize("offset", [-301, 301, -86_400, 86_400])
def test_timestamps_outside_the_tolerance_fail(offset: int) -> None:
    secret = new_secret()
    headers = signature_headers(MSG_ID, NOW + offset, BODY, [secret])
    with pytest.raises(WebhookVerificationError, match="too"):
        verify_webhook(headers, BODY, secret, now=NOW)


@pytest.mark.parametrize("offset", [-300, 300, 0])
def test_timestamps_at_the_tolerance_edge_pass(offset: int) -> None:
    secret = new_secret()
    verify_webhook(signature_headers(MSG_ID, NOW + offset, BODY, [secret]), BODY, secret, now=NOW)


def test_tolerance_is_configurable_and_now_defaults_to_the_clock() -> None:
    secret = new_secret()
    stale = signature_headers(MSG_ID, int(time.time()) - 600, BODY, [secret])
    with pytest.raises(WebhookVerificationError):
        verify_webhook(stale, BODY, secret)
    verify_webhook(stale, BODY, secret, tolerance=900)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_or_empty_headers_fail(missing: str) -> None:
    secret = new_secret()
    headers = signature_headers(MSG_ID, NOW, BODY, [secret])
    without = {name: value for name, value in headers.items() if name != missing}
    with pytest.raises(WebhookVerificationError, match=missing):
        verify_webhook(without, BODY, secret, now=NOW)
    with pytest.raises(WebhookVerificationError, match=missing):
        verify_webhook({**headers, missing: ""}, BODY, secret, now=NOW)


@pytest.mark.parametrize(
    "timestamp", ["abc", "1700000000.5", "+1700000000", "1_700_000_000", "-1", "١٧٠٠٠٠٠٠٠٠", "1e9"]
)
def test_non_integer_timestamps_fail(timestamp: str) -> None:
    secret = new_secret()
    headers = {**signature_headers(MSG_ID, NOW, BODY, [secret]), "webhook-timestamp": timestamp}
    with pytest.raises(WebhookVerificationError, match="integer"):
        verify_webhook(headers, BODY, secret, now=NOW)


def test_malformed_signature_headers_fail() -> None:
    secret = new_secret()
    good = sign(secret, MSG_ID, NOW, BODY)
    value = good.removeprefix("v1,")
    for signature_header in [
        "garbage", "v1", "v1,", value, f"v2,{value}", f"V1,{value}", f"v1a,{value}", f"v1,{value}x",
        f"v1,{value[:-4]}", "v1,ü", f"v1,{value.lower()}",
    ]:
        headers = {**signature_headers(MSG_ID, NOW, BODY, [secret]), "webhook-signature": signature_header}
        with pytest.raises(WebhookVerificationError):
            verify_webhook(headers, BODY, secret, now=NOW)


def test_a_matching_signature_among_unknown_ones_passes() -> None:
    secret = new_secret()
    good = sign(secret, MSG_ID, NOW, BODY)
    headers = signature_headers(MSG_ID, NOW, BODY, [secret])
    headers["webhook-signature"] = f"v2,abc  garbage {good} "
    verify_webhook(headers, BODY, secret, now=NOW)


def test_a_malformed_receiver_secret_is_a_plain_value_error() -> None:
    headers = signature_headers(MSG_ID, NOW, BODY, [new_secret()])
    with pytest.raises(ValueError) as raised:
        verify_webhook(headers, BODY, "not-a-secret", now=NOW)
    assert not isinstance(raised.value, WebhookVerificationError)


def test_verification_error_is_a_value_error() -> None:
    assert issubclass(WebhookVerificationError, ValueError)


def test_the_docstring_example_runs() -> None:
    result = doctest.testmod(signing, verbose=False)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------------------------
# the reference implementation agrees (pypi: standardwebhooks)


def test_our_signature_verifies_with_the_standardwebhooks_library() -> None:
    for secret in (new_secret(), SPEC_SECRET):
        headers = signature_headers(MSG_ID, int(time.time()), BODY, [secret])
        assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_our_rotation_headers_verify_with_the_standardwebhooks_library() -> None:
    current, previous = new_secret(), new_secret()
    headers = signature_headers(MSG_ID, int(time.time()), BODY, [current, previous])
    Webhook(current).verify(BODY, headers)
    Webhook(previous).verify(BODY, headers)


def test_the_standardwebhooks_library_signature_verifies_with_ours() -> None:
    secret = new_secret()
    moment = datetime.now(UTC).replace(microsecond=0)
    signature = Webhook(secret).sign(MSG_ID, moment, BODY.decode())
    assert signature == sign(secret, MSG_ID, int(moment.timestamp()), BODY)
    timestamp = str(int(moment.timestamp()))
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": timestamp, "webhook-signature": signature}
    verify_webhook(headers, BODY, secret)


def test_the_standardwebhooks_library_rejects_a_tampered_body() -> None:
    from standardwebhooks.webhooks import WebhookVerificationError as LibraryError

    secret = new_secret()
    headers = signature_headers(MSG_ID, int(time.time()), BODY, [secret])
    with pytest.raises(LibraryError):
        Webhook(secret).verify(BODY.replace(b"e1", b"e2"), headers)


# ---------------------------------------------------------------------------------------------
# SecretBox (AES-256-GCM)


def test_secret_box_round_trip() -> None:
    box = SecretBox(os.urandom(32))
    secret = new_secret()
    token = box.encrypt(secret)
    assert secret.encode() not in token and len(token) == 12 + len(secret) + 16
    assert box.decrypt(token) == secret
    assert box.encrypt(secret) != token  # a fresh nonce each time


def test_secret_box_with_a_wrong_key_fails() -> None:
    token = SecretBox(os.urandom(32)).encrypt(new_secret())
    with pytest.raises(ValueError, match="wrong key"):
        SecretBox(os.urandom(32)).decrypt(token)


def test_secret_box_rejects_damaged_tokens() -> None:
    box = SecretBox(os.urandom(32))
    token = box.encrypt(new_secret())
    damaged = bytes([token[0] ^ 1]) + token[1:]
    for bad in (damaged, token[:-1], token[:10], b""):
        with pytest.raises(ValueError):
            box.decrypt(bad)


def test_secret_box_binds_the_associated_data() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key, nonce = os.urandom(32), os.urandom(12)
    token = nonce + AESGCM(key).encrypt(nonce, b"whsec_x", b"some other purpose")
    with pytest.raises(ValueError):
        SecretBox(key).decrypt(token)
    ours = nonce + AESGCM(key).encrypt(nonce, b"whsec_x", b"cms-webhook-secret")
    assert SecretBox(key).decrypt(ours) == "whsec_x"


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_secret_box_key_must_be_32_bytes(length: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SecretBox(b"k" * length)


def test_secret_box_does_not_show_its_key() -> None:
    key = os.urandom(32)
    assert key.hex() not in repr(SecretBox(key)) and "hidden" in repr(SecretBox(key))


def test_from_text_accepts_base64_of_32_bytes() -> None:
    key = os.urandom(32)
    text = base64.b64encode(key).decode()
    token = SecretBox(key).encrypt("whsec_abc")
    assert SecretBox.from_text(text).decrypt(token) == "whsec_abc"
    assert SecretBox.from_text(f"  {text}\n").decrypt(token) == "whsec_abc"


@pytest.mark.parametrize(
    "bad",
    ["", "not base64!", "QUJD=", base64.b64encode(b"k" * 16).decode(), base64.b64encode(b"k" * 33).decode()],
)
def test_from_text_rejects_bad_input_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValueError, match="32 bytes") as raised:
        SecretBox.from_text(bad)
    assert not bad or bad not in str(raised.value)


def test_load_or_create_creates_a_0600_file_and_reuses_it(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "webhook.key"
    first = SecretBox.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(base64.b64decode(path.read_text().strip(), validate=True)) == 32
    token = first.encrypt("whsec_abc")
    assert SecretBox.load_or_create(path).decrypt(token) == "whsec_abc"
    assert sorted(p.name for p in path.parent.iterdir()) == ["webhook.key"]  # no temp files left


def test_load_or_create_reads_an_existing_key(tmp_path: Path) -> None:
    key = os.urandom(32)
    path = tmp_path / "webhook.key"
    path.write_text(base64.b64encode(key).decode() + "\n")
    assert SecretBox.load_or_create(path).decrypt(SecretBox(key).encrypt("whsec_abc")) == "whsec_abc"


def test_load_or_create_refuses_a_damaged_key_file_rather_than_replacing_it(tmp_path: Path) -> None:
    path = tmp_path / "webhook.key"
    path.write_text("damaged")
    with pytest.raises(ValueError, match="webhook.key"):
        SecretBox.load_or_create(path)
    assert path.read_text() == "damaged"


def test_a_key_published_first_by_another_process_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race made deterministic: a competitor publishes its key between our read and our publish."""
    path = tmp_path / "webhook.key"
    competitor = os.urandom(32)
    real_publish = signing._publish_without_overwriting

    def competitor_publishes_first(complete_file: Path, target: Path) -> None:
        target.write_text(base64.b64encode(competitor).decode() + "\n")
        real_publish(complete_file, target)

    monkeypatch.setattr(signing, "_publish_without_overwriting", competitor_publishes_first)
    box = SecretBox.load_or_create(path)
    assert box.decrypt(SecretBox(competitor).encrypt("whsec_abc")) == "whsec_abc"
    assert base64.b64decode(path.read_text()) == competitor
    assert sorted(p.name for p in tmp_path.iterdir()) == ["webhook.key"]


def test_threads_racing_to_create_the_key_agree(tmp_path: Path) -> None:
    for attempt in range(10):
        path = tmp_path / f"race{attempt}" / "webhook.key"
        start = threading.Barrier(8)

        def create_and_encrypt(path: Path = path, start: threading.Barrier = start) -> bytes:
            start.wait()
            return SecretBox.load_or_create(path).encrypt("whsec_race")

        with ThreadPoolExecutor(max_workers=8) as pool:
            tokens = list(pool.map(lambda _: create_and_encrypt(), range(8)))
        box = SecretBox.load_or_create(path)
        assert [box.decrypt(token) for token in tokens] == ["whsec_race"] * 8
