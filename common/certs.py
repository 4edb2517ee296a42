"""Certificate sets for a run: the CA, coordinator and domain certificates."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.atomic import fsync_directory, write_bytes_atomic
from common.config import check_domain_name
from common.tls import read_pem

logger = logging.getLogger(__name__)

COORDINATOR_NAME = "coordinator"
CA_NAME = "fedcdr run CA"

# Top-level entries of a certificate set. Other entries of out_dir are kept.
_SET_ENTRIES = ("ca", "coordinator", "domains")
# Ten years; X.509 dates past 9999 overflow Python's datetime.
MAX_DAYS = 3650
# Certificates start this long before "now" so a peer whose clock is a few
# minutes behind still accepts them.
_CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class CertificateSet:
    """Paths of a certificate set created by :func:`create_certificates`.

    Every directory in ``coordinator_dir`` and ``domain_dirs`` contains ``ca.pem``,
    ``cert.pem`` and ``key.pem``. ``ca_key`` signs new domain certificates and
    must stay with the operator of the run.
    """

    root: Path
    ca_cert: Path
    ca_key: Path
    coordinator_dir: Path
    domain_dirs: dict[str, Path]


def create_certificates(
    out_dir: Path,
    domains: Sequence[str],
    hostnames: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = 365,
    overwrite: bool = False,
) -> CertificateSet:
    """Create a CA, a coordinator certificate and one certificate per domain.

    Layout under ``out_dir``::

        ca/ca.pem, ca.key                           CA; ca.key stays with the operator
        coordinator/ca.pem, cert.pem, key.pem       server, CN=coordinator
        domains/<domain>/ca.pem, cert.pem, key.pem  client, CN=<domain>

    The coordinator certificate lists every entry of ``hostnames`` as a subject
    alternative name: an IP address entry for an IP literal and a DNS entry
    otherwise. A client that dials one of those names or addresses verifies the
    coordinator without ``grpc.ssl_target_name_override``, so pass every
    address that clients use (for example the compose service name).

    Keys are ECDSA P-256 in unencrypted PKCS#8 PEM with file mode 0600, and
    certificates are signed with SHA-256. The set is built in a temporary directory
    next to ``out_dir`` and renamed into place, so readers see either no set or
    a complete one. Entries of ``out_dir`` other than ``ca``, ``coordinator``
    and ``domains`` are copied into the new set before the rename.

    Parameters
    ----------
    out_dir
        Directory that receives the set. It may be missing, empty or contain
        other files.
    domains
        Domain names: non-empty, characters ``[a-z0-9_-]``, unique and not
        ``"coordinator"``.
    hostnames
        DNS names and IP addresses under which clients reach the coordinator.
    days
        Validity of every certificate, in days from now.
    overwrite
        Replace a set that ``out_dir`` already contains.

    Raises
    ------
    ValueError
        On an invalid domain name, hostname or ``days``.
    FileExistsError
        When ``out_dir`` already contains a set and ``overwrite`` is false.
    """
    out_dir = Path(out_dir).resolve()
    _check_domains(domains)
    sans = _subject_alternative_names(hostnames)
    _check_days(days)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir {out_dir} is a file; pass a directory for the set")
    if not overwrite:
        existing = [name for name in _SET_ENTRIES if (out_dir / name).exists()]
        if existing:
            raise FileExistsError(
                f"{out_dir} already contains a certificate set "
                f"({', '.join(existing)}); "
                "pass --force (overwrite=True) to replace it, "
                "or choose another directory"
            )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
    try:
        _write_set(staging, domains, sans, days)
        _copy_other_entries(out_dir, staging)
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    logger.info(
        "created certificate set in %s for %d domains, hostnames %s",
        out_dir,
        len(domains),
        list(hostnames),
    )
    return CertificateSet(
        root=out_dir,
        ca_cert=out_dir / "ca" / "ca.pem",
        ca_key=out_dir / "ca" / "ca.key",
        coordinator_dir=out_dir / COORDINATOR_NAME,
        domain_dirs={name: out_dir / "domains" / name for name in domains},
    )


def add_domain_certificate(
    ca_dir: Path,
    out_dir: Path,
    domain: str,
    days: int = 365,
    overwrite: bool = False,
) -> Path:
    """Issue a certificate for one more domain from an existing CA.

    Writes ``out_dir/domains/<domain>/`` (``ca.pem``, ``cert.pem``, ``key.pem``)
    through a temporary directory and a rename, so the directory is complete or
    absent. The certificate expires no later than the CA certificate.

    Parameters
    ----------
    ca_dir
        Directory containing ``ca.pem`` and ``ca.key``, such as ``<set>/ca``.
    out_dir
        Root of the certificate set that receives the domain directory.
    domain
        Domain name, with the rules of :func:`create_certificates`.
    days
        Validity in days from now.
    overwrite
        Replace an existing certificate directory of the same domain.

    Returns
    -------
    Path
        The new domain directory.

    Raises
    ------
    ValueError
        On an invalid domain name or ``days``, or when ``ca.key`` does not belong
        to ``ca.pem``.
    FileNotFoundError
        When ``ca.pem`` or ``ca.key`` is missing.
    FileExistsError
        When the domain directory exists and ``overwrite`` is false.
    """
    ca_dir = Path(ca_dir)
    out_dir = Path(out_dir).resolve()
    _check_domains([domain])
    _check_days(days)
    ca_cert_pem = read_pem(ca_dir / "ca.pem", "CA certificate")
    ca_key_pem = read_pem(ca_dir / "ca.key", "CA private key")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca_dir / 'ca.key'} is not an ECDSA private key")
    if ca_key.public_key() != ca_cert.public_key():
        raise ValueError(
            f"{ca_dir / 'ca.key'} does not belong to {ca_dir / 'ca.pem'}; "
            "pass the directory of the CA that signed the run's certificates"
        )

    target = out_dir / "domains" / domain
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"certificate directory {target} already exists; pass --force (overwrite=True) "
            "(--force on the command line) to replace it, or choose another domain"
        )

    not_after = _now() + datetime.timedelta(days=days)
    if not_after > ca_cert.not_valid_after_utc:
        logger.warning(
            "domain=%s certificate validity shortened to the CA expiry at %s",
            domain,
            ca_cert.not_valid_after_utc.isoformat(),
        )
        not_after = ca_cert.not_valid_after_utc

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{domain}.new-", dir=target.parent))
    try:
        _write_domain_leaf(staging, ca_cert, ca_key, ca_cert_pem, domain, not_after)
        _replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("issued certificate for domain=%s in %s", domain, target)
    return target


# Validation


def _check_domains(domains: Sequence[str]) -> None:
    if isinstance(domains, str):
        raise TypeError(
            f"domains must be a sequence of names, got the string {domains!r}"
        )
    if not domains:
        raise ValueError("domains must contain at least one domain name")
    seen: set[str] = set()
    for name in domains:
        check_domain_name(name, "domain name")
        if name in seen:
            raise ValueError(f"duplicate domain name {name!r}; names must be unique")
        seen.add(name)


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be an integer from 1 to {MAX_DAYS}, got {days!r}")


def _subject_alternative_names(hostnames: Sequence[str]) -> list[x509.GeneralName]:
    if isinstance(hostnames, str):
        raise TypeError(
            f"hostnames must be a sequence of names, got the string {hostnames!r}"
        )
    if not hostnames:
        raise ValueError("hostnames must contain at least one DNS name or IP address")
    sans: list[x509.GeneralName] = []
    for host in hostnames:
        if not isinstance(host, str) or not host.strip() or host != host.strip():
            raise ValueError(f"invalid hostname {host!r}; expected a DNS name or IP")
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    return sans


# Certificate building


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedcdr"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _build_ca(
    days: int,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    now = _now()
    name = _name(CA_NAME)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _build_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    not_after: datetime.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                ca_ski.value
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _write_domain_leaf(
    directory: Path,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_pem: bytes,
    domain: str,
    not_after: datetime.datetime,
) -> None:
    _write_leaf(
        directory,
        ca_cert,
        ca_key,
        ca_pem,
        common_name=domain,
        sans=[x509.DNSName(domain)],
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        not_after=not_after,
    )


def _write_leaf(
    directory: Path,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_pem: bytes,
    common_name: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    not_after: datetime.datetime,
) -> None:
    cert, key = _build_leaf(ca_cert, ca_key, common_name, sans, usage, not_after)
    directory.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(directory / "ca.pem", ca_pem, 0o644)
    write_bytes_atomic(
        directory / "cert.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644
    )
    write_bytes_atomic(directory / "key.pem", _key_pem(key), 0o600)


def _write_set(
    root: Path, domains: Sequence[str], sans: list[x509.GeneralName], days: int
) -> None:
    ca_cert, ca_key = _build_ca(days)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    not_after = ca_cert.not_valid_after_utc

    (root / "ca").mkdir(mode=0o700)
    write_bytes_atomic(root / "ca" / "ca.pem", ca_pem, 0o644)
    write_bytes_atomic(root / "ca" / "ca.key", _key_pem(ca_key), 0o600)

    _write_leaf(
        root / COORDINATOR_NAME,
        ca_cert,
        ca_key,
        ca_pem,
        common_name=COORDINATOR_NAME,
        sans=sans,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        not_after=not_after,
    )
    for domain in domains:
        _write_domain_leaf(
            root / "domains" / domain, ca_cert, ca_key, ca_pem, domain, not_after
        )


# Files


def _copy_other_entries(out_dir: Path, staging: Path) -> None:
    if not out_dir.is_dir():
        return
    for entry in out_dir.iterdir():
        if entry.name in _SET_ENTRIES:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, staging / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, staging / entry.name, follow_symlinks=False)


def _replace_dir(staging: Path, target: Path) -> None:
    """Move the complete directory ``staging`` to ``target``, replacing any old one."""
    os.chmod(staging, 0o755)
    if not target.exists():
        os.rename(staging, target)
        fsync_directory(target.parent)
        return

    # NOTE: an old directory is first renamed aside, so a crash between the two
    # renames leaves no directory at ``target`` but the complete old one next to it
    # as ``.<name>.old-*``. Linux renameat2(RENAME_EXCHANGE) would close that
    # gap but has no wrapper in the standard library.
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rename(target, old / target.name)
    os.rename(staging, target)
    fsync_directory(target.parent)
    shutil.rmtree(old)
