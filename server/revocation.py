"""Revoked client certificates, from the run config and a CRL file.

gRPC's TLS handshake checks that a client certificate chains to the CA and is
within its validity period, but it reads no revocation list. The servicer
checks every request's certificate with :class:`Revocations` instead. The CRL file
is read again when its modification time or size changes (checked at most
once per ``check_interval_s``), and the coordinator reloads both sources on
SIGHUP, so a revocation takes effect without a restart.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography import x509

from common.config import ConfigError, parse_serial

logger = logging.getLogger(__name__)


class Revocations:
    """Serial numbers of revoked client certificates of one CA.

    Parameters
    ----------
    ca_pem
        The federation's CA certificate; a CRL must be issued and signed by it.
    crl
        CRL file in PEM or DER, or None.
    serials
        Revoked serial numbers from the config, as hexadecimal strings.
    check_interval_s
        Minimum time, in seconds, between two checks of the CRL file's
        modification time.

    Raises
    ------
    ConfigError
        When the CRL file is missing, unreadable or not signed by the CA.
    """

    def __init__(
        self,
        ca_pem: bytes,
        crl: Path | None,
        serials: Iterable[str] = (),
        check_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ca = x509.load_pem_x509_certificate(ca_pem)
        self._crl_path = crl
        self._interval = check_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._config_serials = frozenset(parse_serial(s) for s in serials)
        self._crl_serials: frozenset[int] = frozenset()
        self._crl_stamp: tuple[int, int] | None = None
        self._checked = clock()
        if crl is not None:
            self._crl_serials, self._crl_stamp = self._read_crl(crl)

    def revoked_serial(self, certificate_pem: bytes) -> int | None:
        """Return the certificate's serial number if it is revoked, else None."""
        serial = x509.load_pem_x509_certificate(certificate_pem).serial_number
        self._reload_if_changed()
        with self._lock:
            if serial in self._config_serials or serial in self._crl_serials:
                return serial
        return None

    def reload(self, serials: Iterable[str]) -> None:
        """Replace the config's serials and read the CRL file again (SIGHUP).

        Raises
        ------
        ConfigError
            When a serial or the CRL is invalid; the old lists stay in force.
        """
        parsed = frozenset(parse_serial(s) for s in serials)
        crl = (
            self._read_crl(self._crl_path)
            if self._crl_path is not None
            else (frozenset(), None)
        )
        with self._lock:
            self._config_serials = parsed
            self._crl_serials, self._crl_stamp = crl
        logger.info(
            "revocations reloaded: %d serials from the config, %d from the CRL",
            len(parsed),
            len(crl[0]),
        )

    def _reload_if_changed(self) -> None:
        path = self._crl_path
        now = self._clock()
        with self._lock:
            if path is None or now - self._checked < self._interval:
                return
            self._checked = now
            stamp = self._crl_stamp
        try:
            status = os.stat(path)
        except OSError as error:
            logger.error("cannot check CRL %s, keeping the last one: %s", path, error)
            return
        if (status.st_mtime_ns, status.st_size) == stamp:
            return
        try:
            serials, new_stamp = self._read_crl(path)
        except ConfigError as error:
            logger.error("%s; keeping the last valid CRL", error)
            return
        with self._lock:
            self._crl_serials, self._crl_stamp = serials, new_stamp
        logger.info("CRL %s reloaded: %d revoked serials", path, len(serials))

    def _read_crl(self, path: Path) -> tuple[frozenset[int], tuple[int, int]]:
        try:
            status = os.stat(path)
            data = path.read_bytes()
        except OSError as error:
            raise ConfigError(f"cannot read CRL file {path}: {error}") from None
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                crl = x509.load_pem_x509_crl(data)
            else:
                crl = x509.load_der_x509_crl(data)
        except ValueError as error:
            raise ConfigError(
                f"CRL file {path} is not a PEM or DER CRL ({error})"
            ) from None
        public_key = self._ca.public_key()
        if crl.issuer != self._ca.subject or not crl.is_signature_valid(public_key):  # type: ignore[arg-type]
            raise ConfigError(
                f"CRL file {path} is not signed by the federation's CA "
                f"{self._ca.subject.rfc4514_string()}; sign it with ca/ca.key"
            )
        serials = frozenset(entry.serial_number for entry in crl)
        return serials, (status.st_mtime_ns, status.st_size)
