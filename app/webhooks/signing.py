"""Standard Webhooks signatures (https://www.standardwebhooks.com/) and webhook secrets at rest.

Senders call `signature_headers`; receivers call `verify_webhook`. Both follow the spec exactly so
that any Standard Webhooks library can verify what we send. Secrets are stored encrypted with
`SecretBox` (AES-256-GCM) because the sender needs them in the clear to sign, so they cannot be hashed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets as secrets_module
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 24
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"

# ASCII digits only: int() would also accept "+1", " 1", "1_0" and non-ASCII digits.
_UNIX_SECONDS = re.compile(r"[0-9]{1,15}")


class WebhookVerificationError(ValueError):
    """A webhook request that must be rejected: missing headers, stale timestamp or bad signature."""


def new_secret() -> str:
    """A fresh endpoint secret, in the `whsec_<base64>` form receivers' libraries expect."""
    return SECRET_PREFIX + base64.b64encode(secrets_module.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_` secret; ValueError so a mistyped secret fails loudly, not silently."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret must start with {SECRET_PREFIX!r}")
    encoded = secret[len(SECRET_PREFIX):]
    # Accept unpadded base64 too (some providers strip the '='), but nothing outside the alphabet.
    padded = encoded + "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"a webhook secret must be {SECRET_PREFIX!r} followed by standard base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"a webhook secret must hold at least {MIN_SECRET_BYTES} bytes; it has {len(key)}")
    return key


def _signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`, shared by signing and verifying."""
    signed_content = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed_content, hashlib.sha256).digest()).decode("ascii")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature, the unit a `webhook-signature` header is made of."""
    return f"{SIGNATURE_VERSION},{_signature(secret_key(secret), msg_id, timestamp, body)}"


def signature_headers(msg_id: str, timestamp: int, body: bytes, secrets: list[str]) -> dict[str, str]:
    """The three Standard Webhooks headers; one signature per secret so receivers keep working
    while they switch from the previous secret to the current one."""
    if not secrets:
        raise ValueError("at least one webhook secret is needed to sign")
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets),
    }


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: int | None = None,
) -> None:
    """Check that a webhook request really comes from the CMS; call it before trusting the body.

    Pass the raw body bytes exactly as received (not re-serialised JSON). Header names are
    case-insensitive. The timestamp must be within `tolerance` seconds of `now` (default: the
    clock) either way, which bounds replays; dedupe on `webhook-id` to drop retried duplicates.

    Raises WebhookVerificationError when a header is missing, the timestamp is malformed or out
    of tolerance, or no `v1,` signature matches; ValueError when `secret` itself is malformed.

    >>> secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    >>> body = b'{"type": "ping"}'
    >>> headers = signature_headers("evt_01", 1_700_000_000, body, [secret])
    >>> verify_webhook(headers, body, secret, now=1_700_000_030)  # returns None: genuine
    >>> verify_webhook(headers, b'{"type": "forged"}', secret, now=1_700_000_030)
    Traceback (most recent call last):
    ...
    cms.app.webhooks.signing.WebhookVerificationError: no webhook-signature matches

    In a receiver (any framework):

        try:
            verify_webhook(request.headers, await request.body(), os.environ["WEBHOOK_SECRET"])
        except WebhookVerificationError:
            return Response(status_code=400)
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    missing = [name for name in (HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE) if not lowered.get(name)]
    if missing:
        raise WebhookVerificationError(f"missing header(s): {', '.join(missing)}")
    msg_id, timestamp_text, signature_header = (
        lowered[HEADER_ID], lowered[HEADER_TIMESTAMP].strip(), lowered[HEADER_SIGNATURE]
    )

    if not _UNIX_SECONDS.fullmatch(timestamp_text):
        raise WebhookVerificationError(f"{HEADER_TIMESTAMP} is not an integer number of Unix seconds")
    timestamp = int(timestamp_text)
    current = int(time.time()) if now is None else now
    if timestamp < current - tolerance:
        raise WebhookVerificationError(f"{HEADER_TIMESTAMP} is too old (more than {tolerance} s ago)")
    if timestamp > current + tolerance:
        raise WebhookVerificationError(f"{HEADER_TIMESTAMP} is too far in the future (over {tolerance} s)")

    expected = _signature(secret_key(secret), msg_id, timestamp, body).encode("ascii")
    for candidate in signature_header.split():
        version, _, value = candidate.partition(",")
        if version == SIGNATURE_VERSION and hmac.compare_digest(expected, value.encode("utf-8", "replace")):
            return
    raise WebhookVerificationError("no webhook-signature matches")


class SecretBox:
    """Encrypts webhook secrets at rest with AES-256-GCM, so a database dump alone cannot forge
    webhooks. A token is a 12-byte random nonce followed by the ciphertext and 16-byte tag."""

    KEY_BYTES = 32
    NONCE_BYTES = 12
    TAG_BYTES = 16
    ASSOCIATED_DATA = b"cms-webhook-secret"

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != self.KEY_BYTES:
            raise ValueError(f"a SecretBox key must be {self.KEY_BYTES} bytes; got {len(key)}")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def encrypt(self, secret: str) -> bytes:
        """A fresh nonce per call, so the same secret never encrypts to the same bytes twice."""
        nonce = os.urandom(self.NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret.encode("utf-8"), self.ASSOCIATED_DATA)

    def decrypt(self, token: bytes) -> str:
        """ValueError (never cryptography's own exception) when the key is wrong or the token damaged."""
        if len(token) < self.NONCE_BYTES + self.TAG_BYTES:
            raise ValueError("cannot decrypt webhook secret: the token is too short")
        nonce, ciphertext = token[: self.NONCE_BYTES], token[self.NONCE_BYTES:]
        try:
            plaintext = self._aead.decrypt(nonce, ciphertext, self.ASSOCIATED_DATA)
        except InvalidTag:
            raise ValueError("cannot decrypt webhook secret: wrong key or damaged token") from None
        return plaintext.decode("utf-8")

    @classmethod
    def from_text(cls, text: str) -> SecretBox:
        """A key given as base64 text (for an environment variable). Make one with
        `python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"`."""
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            # Never echo the text: it is (meant to be) a secret key.
            message = f"the webhook secret key is not valid base64 (expected {cls.KEY_BYTES} bytes)"
            raise ValueError(message) from None
        if len(key) != cls.KEY_BYTES:
            message = f"the webhook secret key must be {cls.KEY_BYTES} bytes of base64, not {len(key)}"
            raise ValueError(message)
        return cls(key)

    @classmethod
    def load_or_create(cls, path: Path) -> SecretBox:
        """The key in `path`, created (mode 0600) on first use. Processes racing to create it all end
        up with the same key, because losing it would make every stored secret unreadable."""
        try:
            return cls._read(path)
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        key_text = base64.b64encode(os.urandom(cls.KEY_BYTES)).decode("ascii") + "\n"
        descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(descriptor, 0o600)
            with os.fdopen(descriptor, "w", encoding="ascii") as temp_file:
                temp_file.write(key_text)
                temp_file.flush()
                os.fsync(temp_file.fileno())
            _publish_without_overwriting(Path(temp_name), path)
        finally:
            Path(temp_name).unlink(missing_ok=True)
        _fsync_directory(path.parent)
        # Re-read rather than trust our own key: another process may have published first.
        return cls._read(path)

    @classmethod
    def _read(cls, path: Path) -> SecretBox:
        """The key file's contents; a malformed file is an error, never silently replaced."""
        text = path.read_text(encoding="ascii")
        try:
            return cls.from_text(text)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None


def _publish_without_overwriting(complete_file: Path, path: Path) -> None:
    """Make a fully written file appear at `path` at once. A hard link fails if `path` already
    exists, so the first process to publish wins and later ones adopt its key (os.replace would
    let the last writer win after earlier ones had already read and used their own key)."""
    try:
        os.link(complete_file, path)
    except FileExistsError:
        pass
    except OSError:
        # Filesystems without hard links: still atomic, only the rare race is no longer covered.
        os.replace(complete_file, path)


def _fsync_directory(directory: Path) -> None:
    """Persist the new directory entry, best effort (not every platform can open a directory)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
