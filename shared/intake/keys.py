"""The intake forms' keys and their AES-256-GCM sealing.

INTAKE_ENCRYPTION_KEYS holds one or more versioned keys, comma-separated, each
``<version>:<key>`` with a positive whole version and a key of exactly 32 random
bytes in base64 (standard or URL-safe alphabet), e.g.
``1:q0vY…=,2:Xb7c…=``. The highest version encrypts every write; the others only
decrypt rows written under them until ``therapy-db intake-reencrypt`` has moved
those rows, after which an old key can be removed. A row records its version.

Each write uses a fresh random 96-bit nonce. The associated data binds the
ciphertext to its session, its client and its key version: a ciphertext copied to
another row, or a row whose version was changed, does not decrypt. The plaintext
is padded with JSON whitespace to a multiple of PAD_BYTES, so a ciphertext's
length tells little about the answers.

No message here ever quotes key material or plaintext.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import AppError
from shared.settings import SettingsError, get_settings

KEY_BYTES = 32
NONCE_BYTES = 12
PAD_BYTES = 256
AAD_PREFIX = b"therapy-intake-form/v1"


class IntakeUnreadable(AppError):
    """A stored intake form cannot be decrypted: its key version is not configured,
    or the key is wrong, or the row was altered. An error of ours (reported to Sentry),
    never the caller's; nothing of the form is in the message."""

    code = "INTAKE_UNREADABLE"
    http_status = 500
    default_message = "The intake form cannot be decrypted; the practice has been notified"


@dataclass(frozen=True)
class Sealed:
    key_version: int
    nonce: bytes
    ciphertext: bytes


def _decode_key(version: int, text: str) -> bytes:
    cleaned = text.strip()
    padded = cleaned + "=" * (-len(cleaned) % 4)
    try:
        key = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError(f"INTAKE_ENCRYPTION_KEYS: key version {version} is not base64") from None
    if len(key) != KEY_BYTES:
        raise SettingsError(f"INTAKE_ENCRYPTION_KEYS: key version {version} must be {KEY_BYTES} bytes, "
                            f"got {len(key)}")
    return key


def parse_keys(raw: str) -> dict[int, bytes]:
    """{version: key} from the setting's text; SettingsError naming the entry otherwise."""
    keys: dict[int, bytes] = {}
    for position, entry in enumerate(raw.split(","), start=1):
        version_text, separator, key_text = entry.strip().partition(":")
        if not separator:
            raise SettingsError(f"INTAKE_ENCRYPTION_KEYS: entry {position} must be <version>:<base64 key>")
        try:
            version = int(version_text.strip())
        except ValueError:
            raise SettingsError(f"INTAKE_ENCRYPTION_KEYS: entry {position} has no whole version number") from None
        if version <= 0:
            raise SettingsError(f"INTAKE_ENCRYPTION_KEYS: entry {position}: versions start at 1, got {version}")
        if version in keys:
            raise SettingsError(f"INTAKE_ENCRYPTION_KEYS: key version {version} is listed twice")
        keys[version] = _decode_key(version, key_text)
    return keys


def associated_data(booking_id: uuid.UUID, client_id: uuid.UUID, key_version: int) -> bytes:
    return b"|".join((AAD_PREFIX, booking_id.bytes, client_id.bytes, str(key_version).encode()))


def _pad(plaintext: bytes) -> bytes:
    return plaintext + b" " * (-len(plaintext) % PAD_BYTES)


class KeyRing:
    """The configured keys: seal with the newest, open with the row's version."""

    def __init__(self, keys: dict[int, bytes]):
        if not keys:
            raise SettingsError("INTAKE_ENCRYPTION_KEYS holds no key")
        self._ciphers = {version: AESGCM(key) for version, key in keys.items()}
        self.newest = max(keys)

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._ciphers))

    def seal(self, plaintext: bytes, booking_id: uuid.UUID, client_id: uuid.UUID) -> Sealed:
        """Pads and encrypts under the newest key, with a fresh random nonce."""
        return self.seal_padded(_pad(plaintext), booking_id, client_id)

    def seal_padded(self, padded: bytes, booking_id: uuid.UUID, client_id: uuid.UUID) -> Sealed:
        """Encrypts a plaintext that is padded already (re-encryption keeps what it decrypted)."""
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._ciphers[self.newest].encrypt(
            nonce, padded, associated_data(booking_id, client_id, self.newest))
        return Sealed(self.newest, nonce, ciphertext)

    def open(self, sealed: Sealed, booking_id: uuid.UUID, client_id: uuid.UUID) -> bytes:
        cipher = self._ciphers.get(sealed.key_version)
        if cipher is None:
            raise IntakeUnreadable(
                f"The intake form of session {booking_id} cannot be decrypted: it was encrypted with key version "
                f"{sealed.key_version}, which is not configured; the practice has been notified")
        try:
            return cipher.decrypt(bytes(sealed.nonce), bytes(sealed.ciphertext),
                                  associated_data(booking_id, client_id, sealed.key_version))
        except InvalidTag:
            raise IntakeUnreadable(
                f"The intake form of session {booking_id} cannot be decrypted with key version "
                f"{sealed.key_version}: the key is wrong or the stored form was altered; the practice has been "
                "notified") from None


@functools.cache
def _ring_for(raw: str) -> KeyRing:
    return KeyRing(parse_keys(raw))


def key_ring() -> KeyRing:
    """The process's key ring, from INTAKE_ENCRYPTION_KEYS (cached per value of the setting)."""
    return _ring_for(get_settings().require("intake_encryption_keys"))


def new_key() -> str:
    """A fresh key in the setting's encoding (for operators adding a version)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()
