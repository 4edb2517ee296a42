"""Validation of the secure-aggregation messages a client sends to the coordinator."""

from __future__ import annotations

from common.pb import federation_pb2 as pb
from common.secagg.graph import ACTIVE
from common.secagg.keys import X25519_KEY_SIZE
from common.secagg.shamir import SHARE_BYTES
from server.errors import InvalidRequestError

# A share bundle is two 33-byte shares with length prefixes and names, plus
# the GCM nonce and tag, so a few hundred bytes. The limit keeps a client from
# filling the coordinator's memory through another client's inbox.
MAX_SHARE_CIPHERTEXT_BYTES = 1024
MAX_SIGNATURE_BYTES = 128
MAX_CERTIFICATE_BYTES = 16 * 1024


def check_advertisement(
    domain: str, advertisement: pb.KeyAdvertisement, mode: str
) -> None:
    """Raise InvalidRequestError unless ``domain``'s advertisement is well formed.

    The coordinator checks sizes and presence only. The clients verify the
    signatures against the CA themselves, so that a coordinator cannot swap
    a key unnoticed.
    """
    if advertisement.domain != domain:
        raise InvalidRequestError(
            f"the advertisement names domain {advertisement.domain!r}, but the "
            f"caller is {domain!r}"
        )
    for name in ("encryption_public", "mask_public"):
        value = getattr(advertisement, name)
        if len(value) != X25519_KEY_SIZE:
            raise InvalidRequestError(
                f"{name} of {domain!r} has {len(value)} bytes; an X25519 public "
                f"key has {X25519_KEY_SIZE}"
            )
    if advertisement.encryption_public == advertisement.mask_public:
        raise InvalidRequestError(
            f"domain {domain!r} advertised the same key twice; make two key pairs"
        )
    if len(advertisement.certificate_pem) > MAX_CERTIFICATE_BYTES:
        raise InvalidRequestError(
            f"certificate of {domain!r} has {len(advertisement.certificate_pem)} "
            f"bytes; the limit is {MAX_CERTIFICATE_BYTES}"
        )
    if len(advertisement.signature) > MAX_SIGNATURE_BYTES:
        raise InvalidRequestError(
            f"signature of {domain!r} has {len(advertisement.signature)} bytes; "
            f"the limit is {MAX_SIGNATURE_BYTES}"
        )
    if mode == ACTIVE and not (
        advertisement.signature and advertisement.certificate_pem
    ):
        raise InvalidRequestError(
            f"domain {domain!r} sent no signature or certificate; active-mode "
            "secure aggregation needs both"
        )


def collect_shares(
    domain: str, shares: list[pb.RevealedShare], allowed: set[str], kind: str
) -> dict[str, bytes]:
    """Check revealed shares: one per allowed owner, each SHARE_BYTES long."""
    collected: dict[str, bytes] = {}
    for share in shares:
        if share.owner not in allowed:
            raise InvalidRequestError(
                f"domain {domain!r} revealed a {kind} share of {share.owner!r}, "
                f"which it may not reveal in this stage (allowed: {sorted(allowed)})"
            )
        if share.owner in collected:
            raise InvalidRequestError(
                f"domain {domain!r} revealed two {kind} shares of {share.owner!r}"
            )
        if len(share.share) != SHARE_BYTES:
            raise InvalidRequestError(
                f"a {kind} share from {domain!r} has {len(share.share)} bytes; "
                f"expected {SHARE_BYTES}"
            )
        collected[share.owner] = share.share
    return collected
