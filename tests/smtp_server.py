"""A real SMTP server for the tests and the benchmark: aiosmtpd in a thread,
STARTTLS (or implicit TLS) with a self-signed certificate for 127.0.0.1, and
AUTH with one user. It keeps every message it accepted, parsed.

Switches: ``refuse`` (addresses answered 550 at RCPT: a permanent refusal),
``refuse_sender`` (MAIL FROM answered 550: our configuration, not the message),
``defer`` (every RCPT answered 451: try later), ``stop()`` / ``start()`` (the
server down, then back on the same port).
"""

from __future__ import annotations

import datetime
import email
import email.parser
import email.policy
import functools
import ipaddress
import ssl
import tempfile
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.ops.localpg import free_port

USER = "mailer"
PASSWORD = "p@ss:word/with%signs"


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes

    @functools.cached_property
    def message(self) -> EmailMessage:
        """Parsed when first read: the server itself stays cheap under the benchmark's load."""
        return email.message_from_bytes(self.raw, policy=email.policy.default)

    @functools.cached_property
    def message_id(self) -> str:
        return str(email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(self.raw)["Message-ID"])


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files in `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class _Handler:
    def __init__(self, server: SmtpTestServer):
        self.server = server

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802 (aiosmtpd's name)
        if self.server.refuse_sender:
            return "550 5.7.1 Sender address rejected"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if self.server.defer:
            return "451 4.3.0 Mailbox busy, try again later"
        if address in self.server.refuse:
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        raw = envelope.original_content or envelope.content
        with self.server.lock:
            self.server.received.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos), raw))
        return "250 Message accepted"


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok)


class SmtpTestServer:
    """``implicit_tls=False``: STARTTLS required on a plain port (smtp://); True: smtps://."""

    def __init__(self, *, implicit_tls: bool = False):
        self.implicit_tls = implicit_tls
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="therapy-smtp-"))
        self.cert_file, key_file = self_signed_certificate(self.directory)
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(self.cert_file, key_file)
        self.received: list[Received] = []
        self.refuse: set[str] = set()
        self.defer = False
        self.refuse_sender = False
        self.lock = threading.Lock()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        from urllib.parse import quote

        scheme = "smtps" if self.implicit_tls else "smtp"
        return f"{scheme}://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{self.port}"

    def start(self) -> SmtpTestServer:
        options = ({"ssl_context": self._context} if self.implicit_tls
                   else {"tls_context": self._context, "require_starttls": True})
        self._controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, authenticator=_authenticator,
            # Over implicit TLS aiosmtpd does not count the connection as TLS for AUTH; it is.
            auth_require_tls=not self.implicit_tls, server_hostname="127.0.0.1", **options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def clear(self) -> None:
        with self.lock:
            self.received.clear()
        self.refuse.clear()
        self.defer = False
        self.refuse_sender = False

    def messages(self) -> list[Received]:
        with self.lock:
            return list(self.received)
