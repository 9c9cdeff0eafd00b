"""SMTP with STARTTLS and login, and with implicit TLS, against aiosmtpd on loopback."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.config import SmtpConfig
from broker.messaging.delivery import Envelope, TemporaryFailure
from broker.messaging.smtp import SmtpTransport

from .test_outbox_delivery import Mailbox, free_port

USER, PASSWORD = "broker", "smtp-password-for-tests"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, and a client context that trusts only it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login.decode(), auth_data.password.decode()) == (USER, PASSWORD)
    return AuthResult(success=ok)


def envelope() -> Envelope:
    return Envelope(
        id=1, tenant="norrnat", channel="email", recipient="kund@example.test",
        subject="Din aktiveringskod", body_text="123456\n", body_html="<p>123456</p>",
        sender_name="Norrnät Elhandel", message_key="k" * 32, attempts=1,
        created_at=datetime.now(UTC),
    )


def test_mail_goes_over_starttls_with_login(certificate):
    server_context, client_context = certificate
    mailbox, port = Mailbox(), free_port()
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=port, server_hostname="localhost",
        tls_context=server_context, require_starttls=True,
        authenticator=authenticator, auth_required=True,
    )
    controller.start()
    try:
        settings = SmtpConfig(host="localhost", port=port, security="starttls",
                              username=USER, password=PASSWORD)
        SmtpTransport(settings, "no-reply@norrnat.test", ssl_context=client_context).deliver(
            envelope())
    finally:
        controller.stop()
    [received] = mailbox.messages
    assert received["Message-ID"] == f"<{'k' * 32}@norrnat.test>"


def test_mail_goes_over_implicit_tls_and_refuses_an_untrusted_certificate(certificate):
    server_context, client_context = certificate
    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port,
                            server_hostname="localhost", ssl_context=server_context)
    controller.start()
    try:
        settings = SmtpConfig(host="localhost", port=port, security="tls")
        SmtpTransport(settings, "no-reply@norrnat.test", ssl_context=client_context).deliver(
            envelope())
        with pytest.raises(TemporaryFailure, match="CERTIFICATE_VERIFY_FAILED"):
            SmtpTransport(settings, "no-reply@norrnat.test").deliver(envelope())
    finally:
        controller.stop()
    assert len(mailbox.messages) == 1
