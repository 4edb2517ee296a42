"""Coordinator side of one secure aggregation: its stages, what each collects, the sum.

The session follows Bonawitz et al. (CCS 2017): clients advertise signed keys
(U1), send encrypted Shamir shares to each other through the coordinator (U2),
upload masked inputs (U3), sign the survivor list (U4) and reveal the shares
that remove the masks (U5). The coordinator never holds a client's plain input:
it adds the masked inputs as they arrive and, after the last stage, subtracts
the rebuilt self masks of the survivors and the pairwise masks that dropped
clients left behind.

A session is not thread-safe. :class:`server.federation.Federation` calls it
under its lock.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

import numpy as np

from common.pb import federation_pb2 as pb
from common.secagg.graph import (
    ACTIVE,
    check_threshold,
    minimum_threshold,
    neighbourhoods,
)
from common.secagg.shamir import ShareError
from common.secagg.vector import SECAGG_ENCODING, VectorLayout, decode
from server.errors import (
    DuplicateError,
    InvalidRequestError,
    QuorumError,
    WrongStageError,
)
from server.secagg_checks import (
    MAX_SHARE_CIPHERTEXT_BYTES,
    MAX_SIGNATURE_BYTES,
    check_advertisement,
    collect_shares,
)
from server.unmask import MaskRemovalInputs, remove_masks

logger = logging.getLogger(__name__)

# Fewer domains than this let each of them learn too much from the sum.
MIN_PRIVATE_DOMAINS = 3


class Stage(enum.Enum):
    """Stage of one secure aggregation; TRANSITIONS lists the allowed moves."""

    ADVERTISE_KEYS = 1
    SHARE_KEYS = 2
    MASKED_INPUT = 3
    CONSISTENCY_CHECK = 4
    UNMASK = 5
    COMPLETE = 6
    FAILED = 7


TRANSITIONS: dict[Stage, frozenset[Stage]] = {
    Stage.ADVERTISE_KEYS: frozenset({Stage.SHARE_KEYS, Stage.FAILED}),
    Stage.SHARE_KEYS: frozenset({Stage.MASKED_INPUT, Stage.FAILED}),
    Stage.MASKED_INPUT: frozenset({Stage.CONSISTENCY_CHECK, Stage.FAILED}),
    Stage.CONSISTENCY_CHECK: frozenset({Stage.UNMASK, Stage.FAILED}),
    Stage.UNMASK: frozenset({Stage.COMPLETE, Stage.FAILED}),
    Stage.COMPLETE: frozenset(),
    Stage.FAILED: frozenset(),
}

# The wire value of each stage that clients wait for.
WIRE_STAGES = {
    pb.SEC_AGG_STAGE_ADVERTISE_KEYS: Stage.ADVERTISE_KEYS,
    pb.SEC_AGG_STAGE_SHARE_KEYS: Stage.SHARE_KEYS,
    pb.SEC_AGG_STAGE_MASKED_INPUT: Stage.MASKED_INPUT,
    pb.SEC_AGG_STAGE_CONSISTENCY_CHECK: Stage.CONSISTENCY_CHECK,
    pb.SEC_AGG_STAGE_UNMASK: Stage.UNMASK,
}


@dataclass(frozen=True)
class SessionSettings:
    """Settings of a run that every session of it shares."""

    run_id: str
    mode: str
    threshold: int
    neighbours: int
    levels: int


class SecAggSession:
    """One task's secure aggregation, from key advertisement to the unmasked sum.

    Parameters
    ----------
    settings
        The run's secure-aggregation settings.
    aggregation_round
        Number of this aggregation within the run; keys and shares bind it.
    participants
        Domains invited to the task.
    layout
        Layout of the plain upload vector.
    weight_cap
        Largest weight one client may encode; sent to the clients.
    """

    encoding = SECAGG_ENCODING

    def __init__(
        self,
        settings: SessionSettings,
        aggregation_round: int,
        participants: frozenset[str],
        layout: VectorLayout,
        weight_cap: int,
    ) -> None:
        self.settings = settings
        self.aggregation_round = aggregation_round
        self.participants = participants
        self.layout = layout
        self.weight_cap = weight_cap
        self.stage = Stage.ADVERTISE_KEYS
        self.threshold = 0
        self.hoods: dict[str, tuple[str, ...]] = {}
        self.advertisements: dict[str, pb.KeyAdvertisement] = {}
        self.inboxes: dict[str, dict[str, bytes]] = {}
        self.shared: set[str] = set()
        self.masked_sum = np.zeros(layout.masked_length, dtype=np.uint32)
        self.survivors: set[str] = set()
        self.signatures: dict[str, bytes] = {}
        self.revealed: dict[str, tuple[dict[str, bytes], dict[str, bytes]]] = {}
        self.clipped_total = 0
        self._result: np.ndarray | None = None

    # Wire views

    def task_message(self) -> pb.SecAggTask:
        """Return the per-task parameters that GetTask sends."""
        return pb.SecAggTask(
            aggregation_round=self.aggregation_round,
            weight_cap=self.weight_cap,
            segments=self.layout.to_proto(),
        )

    def accepts_newcomer(self, domain: str) -> bool:
        """Return True while ``domain`` can still start this aggregation."""
        return (
            self.stage is Stage.ADVERTISE_KEYS
            and domain in self.participants
            and domain not in self.advertisements
        )

    def finished(self) -> set[str]:
        """Return the domains with nothing left to do in this aggregation."""
        if self.stage in (Stage.COMPLETE, Stage.FAILED):
            return set(self.participants)
        return set(self.revealed)

    # RPC side

    def advertise(self, domain: str, advertisement: pb.KeyAdvertisement) -> None:
        """Accept ``domain``'s key advertisement (stage 1)."""
        self._require_stage(Stage.ADVERTISE_KEYS, domain, "advertise keys")
        if domain not in self.participants:
            raise WrongStageError(
                f"domain {domain!r} is not a participant of this aggregation"
            )
        if domain in self.advertisements:
            raise DuplicateError(f"domain {domain!r} already advertised its keys")
        check_advertisement(domain, advertisement, self.settings.mode)
        keys = {advertisement.encryption_public, advertisement.mask_public}
        for other in self.advertisements.values():
            if keys & {other.encryption_public, other.mask_public}:
                raise InvalidRequestError(
                    f"domain {domain!r} advertised a public key that domain "
                    f"{other.domain!r} already uses; make fresh keys"
                )
        self.advertisements[domain] = advertisement

    def share_keys(self, domain: str, shares: list[pb.EncryptedShare]) -> None:
        """Accept ``domain``'s encrypted share bundles for its peers (stage 2)."""
        self._require_stage(Stage.SHARE_KEYS, domain, "share keys")
        self._require_member(domain, set(self.advertisements), "advertised keys")
        if domain in self.shared:
            raise DuplicateError(f"domain {domain!r} already sent its shares")
        expected = set(self.hoods[domain])
        receivers = [share.receiver for share in shares]
        if len(set(receivers)) != len(receivers) or set(receivers) != expected:
            raise InvalidRequestError(
                f"domain {domain!r} must send one share bundle to each of "
                f"{sorted(expected)}, got bundles for {sorted(receivers)}"
            )
        for share in shares:
            if share.sender != domain:
                raise InvalidRequestError(
                    f"a share bundle from {domain!r} names sender {share.sender!r}"
                )
            if not 0 < len(share.ciphertext) <= MAX_SHARE_CIPHERTEXT_BYTES:
                raise InvalidRequestError(
                    f"a share bundle for {share.receiver!r} has "
                    f"{len(share.ciphertext)} bytes; expected 1 to "
                    f"{MAX_SHARE_CIPHERTEXT_BYTES}"
                )
        for share in shares:
            self.inboxes.setdefault(share.receiver, {})[domain] = share.ciphertext
        self.shared.add(domain)

    def add_masked_input(self, domain: str, payload: bytes) -> None:
        """Add ``domain``'s masked vector to the running sum (stage 3)."""
        self._require_stage(Stage.MASKED_INPUT, domain, "upload a masked input")
        self._require_member(domain, self.shared, "sent shares")
        if domain in self.survivors:
            raise DuplicateError(f"domain {domain!r} already uploaded its input")
        expected = self.layout.masked_length * 4
        if len(payload) != expected:
            raise InvalidRequestError(
                f"masked input from {domain!r} has {len(payload)} bytes; this task "
                f"takes {self.layout.masked_length} uint32 values ({expected} bytes)"
            )
        # uint32 addition wraps, which is the sum mod 2**32.
        self.masked_sum += np.frombuffer(payload, dtype="<u4")
        self.survivors.add(domain)

    def consistency_check(self, domain: str, signature: bytes) -> None:
        """Accept ``domain``'s signature over the survivor list (stage 4)."""
        self._require_stage(Stage.CONSISTENCY_CHECK, domain, "sign the survivors")
        self._require_member(domain, self.survivors, "uploaded a masked input")
        if domain in self.signatures:
            raise DuplicateError(f"domain {domain!r} already signed the survivors")
        if len(signature) > MAX_SIGNATURE_BYTES or (
            self.settings.mode == ACTIVE and not signature
        ):
            raise InvalidRequestError(
                f"survivor signature from {domain!r} has {len(signature)} bytes; "
                f"expected 1 to {MAX_SIGNATURE_BYTES}"
            )
        self.signatures[domain] = signature

    def unmask(
        self,
        domain: str,
        self_mask_shares: list[pb.RevealedShare],
        mask_key_shares: list[pb.RevealedShare],
    ) -> None:
        """Accept ``domain``'s revealed shares (stage 5)."""
        self._require_stage(Stage.UNMASK, domain, "reveal shares")
        self._require_member(domain, set(self.signatures), "signed the survivors")
        if domain in self.revealed:
            raise DuplicateError(f"domain {domain!r} already revealed its shares")
        holders = set(self.hoods[domain]) | {domain}
        dropped = self.shared - self.survivors
        seeds = collect_shares(
            domain, self_mask_shares, holders & self.survivors, "self-mask"
        )
        keys = collect_shares(domain, mask_key_shares, holders & dropped, "mask-key")
        self.revealed[domain] = (seeds, keys)

    def view(self, domain: str, stage: Stage) -> pb.GetSecAggStageResponse:
        """Return the inputs of ``stage`` for ``domain``, or ready=False."""
        if self.stage is Stage.FAILED:
            raise WrongStageError("this aggregation failed; wait for the next task")
        if stage.value > self.stage.value:
            return pb.GetSecAggStageResponse(ready=False)
        if stage is Stage.SHARE_KEYS:
            self._require_member(domain, set(self.advertisements), "advertised keys")
            return pb.GetSecAggStageResponse(
                ready=True,
                advertisements=[
                    self.advertisements[d] for d in sorted(self.advertisements)
                ],
                threshold=self.threshold,
            )
        if stage is Stage.MASKED_INPUT:
            self._require_member(domain, self.shared, "sent shares")
            inbox = self.inboxes.get(domain, {})
            return pb.GetSecAggStageResponse(
                ready=True,
                shares=[
                    pb.EncryptedShare(sender=s, receiver=domain, ciphertext=inbox[s])
                    for s in sorted(inbox)
                    if s in self.shared
                ],
            )
        if stage is Stage.CONSISTENCY_CHECK:
            self._require_member(domain, self.survivors, "uploaded a masked input")
            return pb.GetSecAggStageResponse(
                ready=True, survivors=sorted(self.survivors)
            )
        if stage is Stage.UNMASK:
            self._require_member(domain, set(self.signatures), "signed the survivors")
            return pb.GetSecAggStageResponse(
                ready=True,
                survivors=sorted(self.survivors),
                dropped=sorted(self.shared - self.survivors),
                signatures=[
                    pb.SurvivorSignature(domain=d, signature=self.signatures[d])
                    for d in sorted(self.signatures)
                ],
            )
        return pb.GetSecAggStageResponse(ready=True)

    # Round-loop side

    def expected(self) -> set[str]:
        """Return the domains that should act in the current stage."""
        return {
            Stage.ADVERTISE_KEYS: set(self.participants),
            Stage.SHARE_KEYS: set(self.advertisements),
            Stage.MASKED_INPUT: set(self.shared),
            Stage.CONSISTENCY_CHECK: set(self.survivors),
            Stage.UNMASK: set(self.signatures),
        }.get(self.stage, set())

    def acted(self) -> set[str]:
        """Return the domains that have acted in the current stage."""
        return {
            Stage.ADVERTISE_KEYS: set(self.advertisements),
            Stage.SHARE_KEYS: set(self.shared),
            Stage.MASKED_INPUT: set(self.survivors),
            Stage.CONSISTENCY_CHECK: set(self.signatures),
            Stage.UNMASK: set(self.revealed),
        }.get(self.stage, set())

    def close_stage(self, task_id: str) -> None:
        """End the current stage and start the next, or fail the aggregation.

        Raises
        ------
        QuorumError
            When fewer than the threshold of domains acted, or the masks could
            not be removed. The session is FAILED afterwards.
        """
        stage = self.stage
        acted = self.acted()
        late = sorted(self.expected() - acted)
        if late:
            logger.warning(
                "task=%s stage=%s dropped domains %s", task_id, stage.name, late
            )
        try:
            if stage is Stage.ADVERTISE_KEYS:
                self._start_sharing(task_id)
            else:
                self._require_threshold(len(acted), stage, task_id)
            if stage is Stage.UNMASK:
                self._finish(task_id)
        except QuorumError:
            self._move_to(Stage.FAILED)
            raise
        self._move_to(_NEXT[stage])
        logger.info(
            "task=%s stage=%s closed with %d domains", task_id, stage.name, len(acted)
        )

    def fail(self) -> None:
        """Mark the aggregation failed, for example when the run is aborted."""
        if self.stage not in (Stage.COMPLETE, Stage.FAILED):
            self._move_to(Stage.FAILED)

    def total(self) -> np.ndarray:
        """Return the float64 sum of the survivors' plain uploads."""
        if self._result is None:
            raise RuntimeError("the aggregation has not completed")
        return self._result.copy()

    # Steps

    def _start_sharing(self, task_id: str) -> None:
        domains = sorted(self.advertisements)
        if not domains:
            raise QuorumError(f"task {task_id}: no domain advertised keys")
        self.hoods = neighbourhoods(
            domains,
            self.settings.neighbours,
            self.settings.run_id,
            self.aggregation_round,
        )
        holders = len(next(iter(self.hoods.values()))) + 1
        threshold = self.settings.threshold or minimum_threshold(
            holders, self.settings.mode
        )
        try:
            check_threshold(threshold, holders, self.settings.mode)
        except ValueError as error:
            raise QuorumError(f"task {task_id}: {error}") from None
        self.threshold = threshold
        if len(domains) < MIN_PRIVATE_DOMAINS:
            logger.warning(
                "task=%s only %d domains take part in secure aggregation: with "
                "fewer than %d, each can work out the others' updates from the "
                "sum and its own",
                task_id,
                len(domains),
                MIN_PRIVATE_DOMAINS,
            )

    def _require_threshold(self, count: int, stage: Stage, task_id: str) -> None:
        if count < self.threshold:
            raise QuorumError(
                f"task {task_id}: {count} domains completed secure-aggregation "
                f"stage {stage.name}, fewer than the threshold {self.threshold}"
            )

    def _finish(self, task_id: str) -> None:
        domains = sorted(self.advertisements)
        ids = {d: index + 1 for index, d in enumerate(domains)}
        seeds: dict[str, dict[int, bytes]] = {d: {} for d in self.survivors}
        keys: dict[str, dict[int, bytes]] = {
            d: {} for d in self.shared - self.survivors
        }
        for holder, (self_shares, key_shares) in self.revealed.items():
            for owner, share in self_shares.items():
                seeds[owner][ids[holder]] = share
            for owner, share in key_shares.items():
                keys[owner][ids[holder]] = share
        inputs = MaskRemovalInputs(
            run_id=self.settings.run_id,
            round_index=self.aggregation_round,
            threshold=self.threshold,
            survivors=sorted(self.survivors),
            mask_public={d: a.mask_public for d, a in self.advertisements.items()},
            hoods=self.hoods,
            seed_shares=seeds,
            key_shares=keys,
        )
        try:
            unmasked = remove_masks(self.masked_sum, inputs)
        except (ShareError, ValueError) as error:
            raise QuorumError(
                f"task {task_id}: the masks could not be removed: {error}"
            ) from None
        self._result, self.clipped_total = decode(
            unmasked, self.layout, self.settings.levels
        )

    def _move_to(self, stage: Stage) -> None:
        if stage not in TRANSITIONS[self.stage]:
            raise RuntimeError(
                f"secure-aggregation stage {self.stage.name} cannot move to "
                f"{stage.name}"
            )
        self.stage = stage

    def _require_stage(self, stage: Stage, domain: str, action: str) -> None:
        if self.stage is not stage:
            raise WrongStageError(
                f"domain {domain!r} cannot {action} now: the aggregation is in "
                f"stage {self.stage.name}"
            )

    def _require_member(self, domain: str, members: set[str], what: str) -> None:
        if domain not in members:
            raise WrongStageError(
                f"domain {domain!r} has not {what} in this aggregation, so it "
                "takes part again from the next task"
            )


_NEXT = {
    Stage.ADVERTISE_KEYS: Stage.SHARE_KEYS,
    Stage.SHARE_KEYS: Stage.MASKED_INPUT,
    Stage.MASKED_INPUT: Stage.CONSISTENCY_CHECK,
    Stage.CONSISTENCY_CHECK: Stage.UNMASK,
    Stage.UNMASK: Stage.COMPLETE,
}
