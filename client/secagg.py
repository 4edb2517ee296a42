"""A domain's side of one secure aggregation: keys, shares, masked input, unmasking.

:class:`Participant` is a one-shot state machine over wire messages, with no
I/O, so a test can play a misbehaving coordinator against it. Each step checks
what the coordinator relayed and raises :class:`RefusalError` before it reveals
anything when a check fails.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from common.config import TLSConfig
from common.pb import federation_pb2 as pb
from common.secagg.graph import ACTIVE, check_threshold, neighbourhoods
from common.secagg.keys import (
    KeyAgreementError,
    ShareDecryptionError,
    decrypt_share,
    encode_fields,
    encrypt_share,
    generate_key_pair,
    private_key_bytes,
    share_associated_data,
    share_encryption_key,
    shared_secret,
)
from common.secagg.masking import mask_input
from common.secagg.shamir import SHARE_BYTES, split_secret
from common.secagg.signing import (
    SignatureError,
    advertisement_bytes,
    sign_advertisement,
    survivors_bytes,
    verify_advertisement,
)
from common.secagg.vector import VectorLayout, encode
from common.tls import read_pem

logger = logging.getLogger(__name__)

SEED_BYTES = 32


class RefusalError(RuntimeError):
    """The client stops an aggregation because a check failed; nothing secret left."""


@dataclass(frozen=True)
class Identity:
    """The client's certificate, its private key and the federation's CA."""

    certificate_pem: bytes
    private_key: ec.EllipticCurvePrivateKey
    ca_pem: bytes


def load_identity(tls: TLSConfig) -> Identity | None:
    """Load the identity that signs key advertisements, or None when none is set.

    Raises
    ------
    ValueError
        When the key is not an ECDSA P-256 key.
    """
    if tls.ca is None or tls.cert is None or tls.key is None:
        return None
    certificate_pem = read_pem(tls.cert, "tls.cert")
    key = serialization.load_pem_private_key(read_pem(tls.key, "tls.key"), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
        key.curve, ec.SECP256R1
    ):
        raise ValueError(
            f"tls.key {tls.key} is not an ECDSA P-256 key, which secure aggregation "
            "signs with; use the key made by `fedcdr-coordinator certs`"
        )
    x509.load_pem_x509_certificate(certificate_pem)
    return Identity(certificate_pem, key, read_pem(tls.ca, "tls.ca"))


class Participant:
    """One client's state in one aggregation; each step runs once, in order.

    Parameters
    ----------
    domain, run_id
        The client's domain and the run.
    mode, levels, neighbours
        The run's secure-aggregation settings from JoinResponse.
    task
        The task's SecAggTask.
    identity
        Signing identity; required in active mode.
    rng
        Source of the stochastic rounding (not of any key or mask).
    """

    def __init__(
        self,
        domain: str,
        run_id: str,
        secagg: pb.SecAggConfig,
        task: pb.SecAggTask,
        identity: Identity | None,
        rng: np.random.Generator,
    ) -> None:
        if secagg.mode == ACTIVE and identity is None:
            raise RefusalError(
                "active-mode secure aggregation needs tls.ca, tls.cert and tls.key "
                "to sign keys; set them in the client config"
            )
        self.domain = domain
        self.run_id = run_id
        self.mode = secagg.mode
        self.levels = int(secagg.levels)
        self.neighbours = int(secagg.neighbours)
        self.round = int(task.aggregation_round)
        self.weight_cap = int(task.weight_cap)
        self.layout = VectorLayout.from_proto(list(task.segments))
        self.identity = identity
        self.rng = rng
        self._encryption_private, self._encryption_public = generate_key_pair()
        self._mask_private, self._mask_public = generate_key_pair()
        self._seed = os.urandom(SEED_BYTES)
        self._step = 0
        self._roster: dict[str, pb.KeyAdvertisement] = {}
        self._ids: dict[str, int] = {}
        self._hood: tuple[str, ...] = ()
        self._threshold = 0
        self._own_shares: tuple[bytes, bytes] = (b"", b"")
        self._received: dict[str, tuple[bytes, bytes]] = {}
        self._survivors: list[str] = []

    # Stage 1

    def advertise(self) -> pb.KeyAdvertisement:
        """Return the signed advertisement of this round's two public keys."""
        self._advance(1, "advertise keys")
        signature = b""
        certificate = b""
        if self.identity is not None:
            message = advertisement_bytes(
                self.run_id,
                self.round,
                self.domain,
                self._encryption_public,
                self._mask_public,
            )
            signature = sign_advertisement(self.identity.private_key, message)
            certificate = self.identity.certificate_pem
        return pb.KeyAdvertisement(
            domain=self.domain,
            encryption_public=self._encryption_public,
            mask_public=self._mask_public,
            signature=signature,
            certificate_pem=certificate,
        )

    # Stage 2

    def share_keys(self, stage: pb.GetSecAggStageResponse) -> list[pb.EncryptedShare]:
        """Check the roster, then split and encrypt this client's two secrets."""
        self._advance(2, "share keys")
        self._check_roster(list(stage.advertisements))
        domains = sorted(self._roster)
        self._ids = {d: index + 1 for index, d in enumerate(domains)}
        hoods = neighbourhoods(domains, self.neighbours, self.run_id, self.round)
        self._hood = hoods[self.domain]
        holders = len(self._hood) + 1
        self._threshold = stage.threshold
        try:
            check_threshold(stage.threshold, holders, self.mode)
        except ValueError as error:
            raise RefusalError(
                f"the coordinator's threshold is unsafe: {error}"
            ) from None

        # Split b_u and the mask private key over the neighbourhood and this client.
        ids = [self._ids[d] for d in (*self._hood, self.domain)]
        seed_shares = split_secret(self._seed, self._threshold, ids)
        key_shares = split_secret(
            private_key_bytes(self._mask_private), self._threshold, ids
        )
        own = self._ids[self.domain]
        self._own_shares = (seed_shares[own], key_shares[own])

        bundles = []
        for peer in self._hood:
            plaintext = encode_fields(
                self.domain.encode(),
                peer.encode(),
                seed_shares[self._ids[peer]],
                key_shares[self._ids[peer]],
            )
            key = self._share_key(peer)
            aad = share_associated_data(self.run_id, self.round, self.domain, peer)
            bundles.append(
                pb.EncryptedShare(
                    sender=self.domain,
                    receiver=peer,
                    ciphertext=encrypt_share(key, plaintext, aad),
                )
            )
        return bundles

    def _check_roster(self, advertisements: list[pb.KeyAdvertisement]) -> None:
        names = [a.domain for a in advertisements]
        if len(set(names)) != len(names):
            raise RefusalError(f"the roster names a domain twice: {sorted(names)}")
        keys = [k for a in advertisements for k in (a.encryption_public, a.mask_public)]
        if len(set(keys)) != len(keys):
            raise RefusalError("the roster repeats a public key")
        roster = {a.domain: a for a in advertisements}
        mine = roster.get(self.domain)
        if (
            mine is None
            or mine.encryption_public != self._encryption_public
            or mine.mask_public != self._mask_public
        ):
            raise RefusalError("the roster does not carry this client's own keys")
        if self.mode == ACTIVE:
            for advertisement in advertisements:
                self._verify_advertisement(advertisement)
        self._roster = roster

    def _verify_advertisement(self, advertisement: pb.KeyAdvertisement) -> None:
        if self.identity is None:
            raise RefusalError("no CA is configured to check advertisements against")
        message = advertisement_bytes(
            self.run_id,
            self.round,
            advertisement.domain,
            advertisement.encryption_public,
            advertisement.mask_public,
        )
        try:
            verify_advertisement(
                advertisement.certificate_pem,
                self.identity.ca_pem,
                advertisement.domain,
                message,
                advertisement.signature,
            )
        except (SignatureError, ValueError, TypeError) as error:
            raise RefusalError(
                f"the advertisement of {advertisement.domain!r} failed verification: "
                f"{error}"
            ) from None

    def _share_key(self, peer: str) -> bytes:
        try:
            secret = shared_secret(
                self._encryption_private, self._roster[peer].encryption_public
            )
        except KeyAgreementError as error:
            raise RefusalError(f"the key of {peer!r} is unusable: {error}") from None
        return share_encryption_key(secret, self.run_id, self.round)

    # Stage 3

    def masked_input(
        self, stage: pb.GetSecAggStageResponse, vector: np.ndarray
    ) -> tuple[bytes, int]:
        """Decrypt the shares received, then encode and mask ``vector``.

        Returns
        -------
        tuple[bytes, int]
            The little-endian uint32 masked vector and the number of values
            clipped while encoding it.
        """
        self._advance(3, "upload a masked input")
        for share in stage.shares:
            self._receive(share)
        if len(self._received) + 1 < self._threshold:
            raise RefusalError(
                f"only {len(self._received) + 1} clients of this neighbourhood shared "
                f"keys, fewer than the threshold {self._threshold}"
            )
        encoded, n_clipped = encode(
            vector, self.layout, self.levels, self.weight_cap, self.rng
        )
        masked = mask_input(
            encoded,
            domain=self.domain,
            seed=self._seed,
            mask_private=self._mask_private,
            peer_publics={p: self._roster[p].mask_public for p in self._received},
            run_id=self.run_id,
            round_index=self.round,
        )
        return masked.astype("<u4").tobytes(), n_clipped

    def _receive(self, share: pb.EncryptedShare) -> None:
        sender = share.sender
        if share.receiver != self.domain or sender not in self._hood:
            raise RefusalError(
                f"a share bundle from {sender!r} to {share.receiver!r} is not "
                "addressed to this client by a neighbour"
            )
        if sender in self._received:
            raise RefusalError(f"two share bundles came from {sender!r}")
        aad = share_associated_data(self.run_id, self.round, sender, self.domain)
        try:
            plaintext = decrypt_share(self._share_key(sender), share.ciphertext, aad)
        except ShareDecryptionError as error:
            raise RefusalError(f"the share bundle from {sender!r}: {error}") from None
        expected = encode_fields(sender.encode(), self.domain.encode())
        body = plaintext[len(expected) :]
        if not plaintext.startswith(expected) or len(body) != 2 * (4 + SHARE_BYTES):
            raise RefusalError(f"the share bundle from {sender!r} is malformed")
        seed_share = body[4 : 4 + SHARE_BYTES]
        key_share = body[8 + SHARE_BYTES :]
        self._received[sender] = (seed_share, key_share)

    # Stage 4

    def consistency_check(self, stage: pb.GetSecAggStageResponse) -> bytes:
        """Check and sign the survivor list; return the signature (empty if
        honest-but-curious)."""
        self._advance(4, "sign the survivors")
        survivors = list(stage.survivors)
        if len(set(survivors)) != len(survivors):
            raise RefusalError(f"the survivor list repeats a name: {survivors}")
        strangers = sorted(set(survivors) - set(self._roster))
        if strangers:
            raise RefusalError(f"the survivor list names strangers {strangers}")
        if self.domain not in survivors:
            raise RefusalError("the survivor list leaves out this client")
        if len(survivors) < self._threshold:
            raise RefusalError(
                f"{len(survivors)} survivors remain, fewer than the threshold "
                f"{self._threshold}"
            )
        self._survivors = sorted(survivors)
        if self.identity is None:
            return b""
        message = survivors_bytes(self.run_id, self.round, self._survivors)
        return sign_advertisement(self.identity.private_key, message)

    # Stage 5

    def unmask(
        self, stage: pb.GetSecAggStageResponse
    ) -> tuple[list[pb.RevealedShare], list[pb.RevealedShare]]:
        """Check the lists and signatures, then return (self-mask shares of
        survivors, mask-key shares of dropped clients)."""
        self._advance(5, "reveal shares")
        survivors = sorted(stage.survivors)
        dropped = list(stage.dropped)
        if survivors != self._survivors:
            raise RefusalError(
                "the unmask request carries another survivor list than the one "
                "this client signed"
            )
        if len(set(dropped)) != len(dropped):
            raise RefusalError(f"the dropped list repeats a name: {dropped}")
        overlap = sorted(set(dropped) & set(survivors))
        if overlap:
            raise RefusalError(f"clients {overlap} are both survivors and dropped")
        strangers = sorted(set(dropped) - set(self._roster))
        if strangers:
            raise RefusalError(f"the dropped list names strangers {strangers}")
        if self.mode == ACTIVE:
            self._check_signatures(list(stage.signatures))

        # One kind of share per client: seeds of survivors, keys of the dropped.
        shares_by_owner = {self.domain: self._own_shares, **self._received}
        seeds = [
            pb.RevealedShare(owner=owner, share=shares_by_owner[owner][0])
            for owner in survivors
            if owner in shares_by_owner
        ]
        keys = [
            pb.RevealedShare(owner=owner, share=shares_by_owner[owner][1])
            for owner in sorted(dropped)
            if owner in shares_by_owner and owner != self.domain
        ]
        return seeds, keys

    def _check_signatures(self, signatures: list[pb.SurvivorSignature]) -> None:
        if self.identity is None:
            raise RefusalError("no CA is configured to check signatures against")
        message = survivors_bytes(self.run_id, self.round, self._survivors)
        now = datetime.datetime.now(datetime.UTC)
        valid = set()
        for entry in signatures:
            advertisement = self._roster.get(entry.domain)
            if advertisement is None or entry.domain not in self._survivors:
                continue
            try:
                verify_advertisement(
                    advertisement.certificate_pem,
                    self.identity.ca_pem,
                    entry.domain,
                    message,
                    entry.signature,
                    now=now,
                )
            except (SignatureError, ValueError, TypeError):
                logger.warning(
                    "round=%d signature of %s over the survivor list is invalid",
                    self.round,
                    entry.domain,
                )
                continue
            valid.add(entry.domain)
        if len(valid) < self._threshold:
            raise RefusalError(
                f"{len(valid)} valid signatures over the survivor list came back, "
                f"fewer than the threshold {self._threshold}"
            )

    def _advance(self, step: int, action: str) -> None:
        if self._step != step - 1:
            raise RefusalError(
                f"cannot {action} at this point of the aggregation (step {step} "
                f"requested after step {self._step}); each step runs once, in order"
            )
        self._step = step
