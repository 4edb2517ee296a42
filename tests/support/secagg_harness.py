"""Drive real client Participants and a real coordinator session in one process.

The harness plays the coordinator's relay role: it passes each stage's
messages from the session to the participants and back, with optional
dropouts and tampering, so tests exercise both sides' real code without gRPC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from client.secagg import Identity, Participant, RefusalError, load_identity
from common.certs import create_certificates
from common.config import TLSConfig
from common.pb import federation_pb2 as pb
from common.secagg.vector import VectorLayout
from server.secagg import SecAggSession, SessionSettings, Stage

RUN_ID = "run"

# Stages in which a harness client can stop acting, in protocol order.
DROP_STAGES = (
    Stage.ADVERTISE_KEYS,
    Stage.SHARE_KEYS,
    Stage.MASKED_INPUT,
    Stage.CONSISTENCY_CHECK,
    Stage.UNMASK,
)

Tamper = Callable[[str, Stage, pb.GetSecAggStageResponse], pb.GetSecAggStageResponse]


def make_identities(root: Path, domains: list[str]) -> dict[str, Identity]:
    """Create a CA and one certificate per domain, and load their identities."""
    certs = create_certificates(root / "certs", domains)
    identities = {}
    for domain in domains:
        folder = certs.root / "domains" / domain
        identity = load_identity(
            TLSConfig(
                ca=folder / "ca.pem", cert=folder / "cert.pem", key=folder / "key.pem"
            )
        )
        assert identity is not None
        identities[domain] = identity
    return identities


@dataclass
class Harness:
    """One aggregation with its participants.

    ``drop`` maps a domain to the stage in which it stops: it does not act in
    that stage or later ones. ``tamper`` may rewrite what a domain receives.
    """

    layout: VectorLayout
    vectors: dict[str, np.ndarray]
    mode: str = "honest-but-curious"
    threshold: int = 0
    neighbours: int = 0
    levels: int = 2**16
    weight_cap: int = 1000
    round_index: int = 1
    identities: dict[str, Identity] = field(default_factory=dict)
    drop: dict[str, Stage] = field(default_factory=dict)
    tamper: Tamper | None = None
    uploads: dict[str, bytes] = field(default_factory=dict)
    refusals: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        settings = SessionSettings(
            run_id=RUN_ID,
            mode=self.mode,
            threshold=self.threshold,
            neighbours=self.neighbours,
            levels=self.levels,
        )
        self.session = SecAggSession(
            settings,
            self.round_index,
            frozenset(self.vectors),
            self.layout,
            self.weight_cap,
        )
        config = pb.SecAggConfig(
            enabled=True, mode=self.mode, levels=self.levels, neighbours=self.neighbours
        )
        task = self.session.task_message()
        self.participants = {
            domain: Participant(
                domain,
                RUN_ID,
                config,
                task,
                self.identities.get(domain),
                np.random.default_rng(index),
            )
            for index, domain in enumerate(sorted(self.vectors))
        }

    def _active(self, stage: Stage) -> list[str]:
        return [
            d
            for d in sorted(self.participants)
            if (d not in self.drop or self.drop[d].value > stage.value)
            and d not in self.refusals
        ]

    def _act(self, domain: str, step: Callable[[], None]) -> None:
        """Run one client's step; a refusal takes the client out of the task."""
        try:
            step()
        except RefusalError as error:
            self.refusals[domain] = str(error)

    def _view(self, domain: str, stage: Stage) -> pb.GetSecAggStageResponse:
        response = self.session.view(domain, stage)
        if self.tamper is not None:
            response = self.tamper(domain, stage, response)
        return response

    def run(self) -> np.ndarray:
        """Run every stage and return the session's float64 total."""
        session = self.session
        for domain in self._active(Stage.ADVERTISE_KEYS):
            session.advertise(domain, self.participants[domain].advertise())
        session.close_stage("task")

        for domain in self._active(Stage.SHARE_KEYS):

            def share(domain: str = domain) -> None:
                roster = self._view(domain, Stage.SHARE_KEYS)
                bundles = self.participants[domain].share_keys(roster)
                session.share_keys(domain, bundles)

            self._act(domain, share)
        session.close_stage("task")

        for domain in self._active(Stage.MASKED_INPUT):

            def mask(domain: str = domain) -> None:
                inbox = self._view(domain, Stage.MASKED_INPUT)
                payload, _ = self.participants[domain].masked_input(
                    inbox, self.vectors[domain]
                )
                self.uploads[domain] = payload
                session.add_masked_input(domain, payload)

            self._act(domain, mask)
        session.close_stage("task")

        for domain in self._active(Stage.CONSISTENCY_CHECK):

            def sign(domain: str = domain) -> None:
                survivors = self._view(domain, Stage.CONSISTENCY_CHECK)
                signature = self.participants[domain].consistency_check(survivors)
                session.consistency_check(domain, signature)

            self._act(domain, sign)
        session.close_stage("task")

        for domain in self._active(Stage.UNMASK):

            def reveal(domain: str = domain) -> None:
                request = self._view(domain, Stage.UNMASK)
                seeds, keys = self.participants[domain].unmask(request)
                session.unmask(domain, seeds, keys)

            self._act(domain, reveal)
        session.close_stage("task")
        return session.total()


def survivors_of(harness: Harness) -> list[str]:
    """Return the domains whose input the sum should contain."""
    return [
        d
        for d in sorted(harness.vectors)
        if d not in harness.drop or harness.drop[d].value > Stage.MASKED_INPUT.value
    ]
