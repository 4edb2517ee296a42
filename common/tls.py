"""Mutual-TLS gRPC credentials and peer identity from PEM certificate files."""

from __future__ import annotations

from pathlib import Path

import grpc
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

_CREATE_HINT = "create certificates with `fedcdr-coordinator certs`"


def server_credentials(ca: Path, cert: Path, key: Path) -> grpc.ServerCredentials:
    """Build coordinator credentials that require a client certificate from ``ca``.

    Raises
    ------
    FileNotFoundError, ValueError
        When a file is missing or invalid, or the key does not match the
        certificate (see :func:`read_pem`).
    """
    ca_pem, cert_pem, key_pem = _read_credential_files(
        ca, cert, key, ExtendedKeyUsageOID.SERVER_AUTH
    )
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)],
        root_certificates=ca_pem,
        require_client_auth=True,
    )


def channel_credentials(ca: Path, cert: Path, key: Path) -> grpc.ChannelCredentials:
    """Build client credentials that present ``cert`` and trust only ``ca``.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`server_credentials`.
    """
    ca_pem, cert_pem, key_pem = _read_credential_files(
        ca, cert, key, ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem,
        private_key=key_pem,
        certificate_chain=cert_pem,
    )


def peer_identity(context: grpc.ServicerContext) -> str | None:
    """Return the common name of the peer's verified client certificate.

    Returns None on a connection without TLS or without a client certificate.
    Servers built with :func:`server_credentials` reject clients whose
    certificate does not verify against the CA, so a returned name is verified.
    """
    auth = context.auth_context()
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    names = auth.get("x509_common_name")
    if not names:
        return None
    return names[0].decode("utf-8")


def peer_certificate(context: grpc.ServicerContext) -> bytes | None:
    """Return the peer's verified client certificate in PEM, or None without TLS."""
    auth = context.auth_context()
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    certificates = auth.get("x509_pem_cert")
    return certificates[0] if certificates else None


def read_pem(path: Path, what: str) -> bytes:
    """Read a PEM file, naming ``what`` it should contain in any error.

    Parameters
    ----------
    path
        The file.
    what
        Name of the setting or the expected content, such as ``"tls.cert"``.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ValueError
        When ``path`` is a directory or the file contains no PEM block.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} must be a PEM file, but {path} is a directory")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{what} file not found: {path}; {_CREATE_HINT}"
        ) from None
    if b"-----BEGIN " not in data:
        raise ValueError(
            f"{what} file {path} is not PEM (no '-----BEGIN' line); {_CREATE_HINT}"
        )
    return data


def certificate_common_name(cert_pem: bytes) -> str:
    """Return the subject common name of a PEM certificate.

    Raises
    ------
    ValueError
        When ``cert_pem`` is not a PEM certificate or has no common name.
    """
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ValueError(f"certificate {cert.subject.rfc4514_string()!r} has no CN")
    value = names[0].value
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _read_credential_files(
    ca: Path, cert: Path, key: Path, usage: x509.ObjectIdentifier
) -> tuple[bytes, bytes, bytes]:
    ca_pem = read_pem(ca, "tls.ca")
    cert_pem = read_pem(cert, "tls.cert")
    key_pem = read_pem(key, "tls.key")
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as error:
        raise ValueError(
            f"tls.cert file {cert} is not a valid certificate: {error}"
        ) from None
    try:
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"tls.key file {key} is not an unencrypted private key: {error}"
        ) from None
    if private_key.public_key() != certificate.public_key():
        raise ValueError(
            f"tls.key file {key} does not belong to tls.cert file {cert}; "
            "use the key.pem from the same certificate directory"
        )
    try:
        usages = certificate.extensions.get_extension_for_class(
            x509.ExtendedKeyUsage
        ).value
    except x509.ExtensionNotFound:
        usages = None
    if usages is not None and usage not in usages:
        role = "server" if usage == ExtendedKeyUsageOID.SERVER_AUTH else "client"
        raise ValueError(
            f"tls.cert file {cert} is not valid for TLS {role} authentication "
            f"(its extended key usage lacks {role}Auth); use the "
            f"{'coordinator' if role == 'server' else 'domain'} certificate made "
            "by `fedcdr-coordinator certs`"
        )
    return ca_pem, cert_pem, key_pem
