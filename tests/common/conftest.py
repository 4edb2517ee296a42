"""Certificate sets shared by the certificate and mutual-TLS tests."""

from __future__ import annotations

import pytest

from common.certs import CertificateSet, create_certificates


@pytest.fixture(scope="module")
def cert_set(tmp_path_factory: pytest.TempPathFactory) -> CertificateSet:
    return create_certificates(
        tmp_path_factory.mktemp("run") / "certs", ["books", "office"]
    )


@pytest.fixture(scope="module")
def other_set(tmp_path_factory: pytest.TempPathFactory) -> CertificateSet:
    return create_certificates(tmp_path_factory.mktemp("other") / "certs", ["books"])
