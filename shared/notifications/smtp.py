"""The SMTP connection: ``SMTP_URL`` read once, one connection per run.

- ``smtp://user:pass@host:587``: plain connection upgraded with STARTTLS, which
  is required (a server that does not offer it is refused: credentials and
  health data never cross the network in clear);
- ``smtps://user:pass@host:465``: TLS from the first byte.

Certificates are verified against the system's trust store (OpenSSL's
``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` apply). User and password are
percent-decoded, so a password may contain any character.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import Message
from urllib.parse import unquote, urlsplit

from shared.settings import SettingsError

TIMEOUT_SECONDS = 15.0
_DEFAULT_PORTS = {"smtp": 587, "smtps": 465}


@dataclass(frozen=True)
class SmtpServer:
    scheme: str  # smtp (STARTTLS) or smtps (implicit TLS)
    host: str
    port: int
    username: str | None
    password: str | None

    def __repr__(self) -> str:  # never the password
        return f"SmtpServer({self.scheme}://{self.host}:{self.port})"


def parse_smtp_url(url: str) -> SmtpServer:
    """SMTP_URL as a server, or SettingsError naming what is wrong (never quoting the password)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SettingsError("SMTP_URL is not a valid URL (smtp://user:pass@host:587)") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise SettingsError(f"SMTP_URL must start with smtp:// (STARTTLS) or smtps:// (TLS), got {parts.scheme!r}")
    if not parts.hostname:
        raise SettingsError("SMTP_URL has no host (smtp://user:pass@host:587)")
    if (parts.username is None) != (parts.password is None):
        raise SettingsError("SMTP_URL must carry both a user and a password, or neither")
    return SmtpServer(
        scheme=parts.scheme, host=parts.hostname, port=port or _DEFAULT_PORTS[parts.scheme],
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


class SendRefused(Exception):
    """The server refused this message; ``permanent`` for a 5xx answer (do not retry)."""

    def __init__(self, code: int, text: str):
        self.code = code
        self.permanent = 500 <= code < 600
        super().__init__(f"{code} {text}")


class Mailer:
    """One SMTP session; ``send`` raises SendRefused (the server said no) or
    OSError / smtplib.SMTPException (the connection is unusable)."""

    def __init__(self, server: SmtpServer):
        self.server = server
        self._smtp: smtplib.SMTP | None = None
        self.broken = False  # the connection failed: stop sending in this run

    def mark_broken(self) -> None:
        self.broken = True
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        if self.server.scheme == "smtps":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.server.host, self.server.port, timeout=TIMEOUT_SECONDS,
                                                 context=context)
        else:
            smtp = smtplib.SMTP(self.server.host, self.server.port, timeout=TIMEOUT_SECONDS)
            try:
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise smtplib.SMTPNotSupportedError(
                        f"{self.server.host}:{self.server.port} does not offer STARTTLS; use smtps:// or a server "
                        "that does")
                smtp.starttls(context=context)
                smtp.ehlo()
            except BaseException:
                smtp.close()
                raise
        if self.server.username is not None:
            smtp.login(self.server.username, self.server.password or "")
        return smtp

    def send(self, message: Message) -> None:
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            self._smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            raise SendRefused(code, _text(text)) from None
        except smtplib.SMTPDataError as exc:
            raise SendRefused(exc.smtp_code, _text(exc.smtp_error)) from None
        # SMTPSenderRefused is not about this message (EMAIL_FROM or our account is refused):
        # it propagates as a server failure, and every message waits for it to be fixed.

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (OSError, smtplib.SMTPException):
                self._smtp.close()
            self._smtp = None

    def __enter__(self) -> Mailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
