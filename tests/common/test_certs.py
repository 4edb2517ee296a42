"""Tests of certificate set creation and of issuing domain certificates."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from common.certs import CertificateSet, add_domain_certificate, create_certificates


def test_create_certificates_layout(cert_set: CertificateSet) -> None:
    expected = [
        "ca/ca.key",
        "ca/ca.pem",
        "coordinator/ca.pem",
        "coordinator/cert.pem",
        "coordinator/key.pem",
        "domains/books/ca.pem",
        "domains/books/cert.pem",
        "domains/books/key.pem",
        "domains/office/ca.pem",
        "domains/office/cert.pem",
        "domains/office/key.pem",
    ]
    found = sorted(
        str(path.relative_to(cert_set.root))
        for path in cert_set.root.rglob("*")
        if path.is_file()
    )

    assert found == expected


@pytest.mark.parametrize(
    "relative",
    ["ca/ca.key", "coordinator/key.pem", "domains/books/key.pem"],
)
def test_create_certificates_key_mode_0600(
    cert_set: CertificateSet, relative: str
) -> None:
    mode = stat.S_IMODE((cert_set.root / relative).stat().st_mode)

    assert mode == 0o600


def test_create_certificates_no_staging_left(cert_set: CertificateSet) -> None:
    leftovers = [p.name for p in cert_set.root.parent.iterdir() if p.name != "certs"]

    assert leftovers == []


def test_coordinator_certificate_sans(cert_set: CertificateSet) -> None:
    from cryptography import x509

    pem = (cert_set.coordinator_dir / "cert.pem").read_bytes()
    sans = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )

    assert sans.value.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.value.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1"
    ]


def test_create_certificates_rejects_existing_set(
    cert_set: CertificateSet,
) -> None:
    with pytest.raises(FileExistsError, match="overwrite=True"):
        create_certificates(cert_set.root, ["books"])


def test_create_certificates_overwrite_replaces_set(tmp_path: Path) -> None:
    out_dir = tmp_path / "certs"
    first = create_certificates(out_dir, ["books"])
    old_ca = first.ca_cert.read_bytes()
    (out_dir / "README.txt").write_text("operator notes")

    second = create_certificates(out_dir, ["films"], overwrite=True)

    assert second.ca_cert.read_bytes() != old_ca
    assert not (out_dir / "domains" / "books").exists()
    assert (out_dir / "domains" / "films" / "cert.pem").is_file()
    assert (out_dir / "README.txt").read_text() == "operator notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["certs"]


def test_create_certificates_into_empty_folder(tmp_path: Path) -> None:
    create_certificates(tmp_path, ["books"])

    assert (tmp_path / "domains" / "books" / "key.pem").is_file()


@pytest.mark.parametrize(
    ("domains", "bad"),
    [
        ([""], "''"),
        (["Books"], "'Books'"),
        (["books.shop"], "'books.shop'"),
        (["coordinator"], "'coordinator'"),
        (["books", "books"], "'books'"),
    ],
)
def test_create_certificates_bad_domain(
    tmp_path: Path, domains: list[str], bad: str
) -> None:
    with pytest.raises(ValueError, match=bad):
        create_certificates(tmp_path / "certs", domains)

    assert not (tmp_path / "certs").exists()


def test_add_domain_certificate_rejects_existing(
    cert_set: CertificateSet,
) -> None:
    with pytest.raises(FileExistsError, match="overwrite=True"):
        add_domain_certificate(cert_set.root / "ca", cert_set.root, "books")


def test_add_domain_certificate_rejects_foreign_key(
    cert_set: CertificateSet, other_set: CertificateSet, tmp_path: Path
) -> None:
    ca_dir = tmp_path / "mixed"
    ca_dir.mkdir()
    (ca_dir / "ca.pem").write_bytes(cert_set.ca_cert.read_bytes())
    (ca_dir / "ca.key").write_bytes(other_set.ca_key.read_bytes())

    with pytest.raises(ValueError, match="does not belong"):
        add_domain_certificate(ca_dir, tmp_path / "out", "films")
