"""Honest clients against a coordinator that tampers with what it relays."""

import numpy as np
import pytest

from client.secagg import Participant, RefusalError
from common.pb import federation_pb2 as pb
from common.secagg.keys import generate_key_pair
from common.secagg.vector import train_layout
from server.errors import QuorumError
from server.secagg import Stage
from tests.support.secagg_harness import Harness, make_identities

DOMAINS = ["d000", "d001", "d002", "d003"]


@pytest.fixture(scope="module")
def identities(tmp_path_factory):
    return make_identities(tmp_path_factory.mktemp("ids"), DOMAINS)


def _harness(identities, tamper=None, drop=None, mode="active") -> Harness:
    layout = train_layout([("w", 12)], [0.5])
    vectors = {
        d: np.append(np.full(12, 0.1 * (i + 1)), 1.0) for i, d in enumerate(DOMAINS)
    }
    return Harness(
        layout,
        vectors,
        mode=mode,
        identities=identities if mode == "active" else {},
        tamper=tamper,
        drop=drop or {},
    )


def _run_expecting_refusals(harness: Harness) -> None:
    """Run the aggregation, which must fail because the honest clients refuse."""
    with pytest.raises(QuorumError):
        harness.run()


def _rewrite(stage: Stage, change):
    """Return a tamper hook that applies ``change(domain, response)`` at ``stage``."""

    def tamper(domain, current, response):
        if current is not stage:
            return response
        copy = pb.GetSecAggStageResponse()
        copy.CopyFrom(response)
        change(domain, copy)
        return copy

    return tamper


def _assert_all_refused(harness, domains, match):
    assert sorted(harness.refusals) == sorted(domains)
    for domain in domains:
        assert match in harness.refusals[domain], harness.refusals[domain]


def test_swapped_key_refused(identities):
    _, fresh = generate_key_pair()

    def swap(domain, response):
        victim = "d003" if domain != "d003" else "d000"
        for advertisement in response.advertisements:
            if advertisement.domain == victim:
                advertisement.mask_public = fresh

    harness = _harness(identities, _rewrite(Stage.SHARE_KEYS, swap))
    _run_expecting_refusals(harness)

    _assert_all_refused(harness, DOMAINS, "failed verification")
    assert harness.session.shared == set()


def test_own_keys_altered_refused(identities):
    def alter(domain, response):
        for advertisement in response.advertisements:
            if advertisement.domain == domain:
                advertisement.encryption_public = bytes(32)

    harness = _harness(
        identities, _rewrite(Stage.SHARE_KEYS, alter), mode="honest-but-curious"
    )
    _run_expecting_refusals(harness)

    _assert_all_refused(harness, DOMAINS, "own keys")


def test_repeated_public_key_refused(identities):
    def repeat(domain, response):
        first, second = response.advertisements[0], response.advertisements[1]
        second.mask_public = first.mask_public

    harness = _harness(
        identities, _rewrite(Stage.SHARE_KEYS, repeat), mode="honest-but-curious"
    )
    _run_expecting_refusals(harness)

    _assert_all_refused(harness, DOMAINS, "repeats a public key")


def test_unsafe_threshold_refused(identities):
    def lower(domain, response):
        response.threshold = 2

    harness = _harness(identities, _rewrite(Stage.SHARE_KEYS, lower))
    _run_expecting_refusals(harness)

    _assert_all_refused(harness, DOMAINS, "threshold is unsafe")


def test_too_few_peers_refused(identities):
    def shrink(domain, response):
        partner = "d001" if domain == "d000" else "d000"
        keep = [a for a in response.advertisements if a.domain in (domain, partner)]
        del response.advertisements[:]
        response.advertisements.extend(keep)

    harness = _harness(identities, _rewrite(Stage.SHARE_KEYS, shrink))
    _run_expecting_refusals(harness)

    _assert_all_refused(harness, DOMAINS, "exceeds the 2 share holders")


def test_tampered_share_ciphertext_refused(identities):
    def flip(domain, response):
        share = response.shares[0]
        share.ciphertext = share.ciphertext[:-1] + bytes([share.ciphertext[-1] ^ 1])

    harness = _harness(identities, _rewrite(Stage.MASKED_INPUT, flip))
    _run_expecting_refusals(harness)

    _assert_all_refused(harness, DOMAINS, "failed authentication")
    assert harness.uploads == {}


def test_stranger_in_survivors_refused(identities):
    def add(domain, response):
        response.survivors.append("mallory")

    harness = _harness(identities, _rewrite(Stage.CONSISTENCY_CHECK, add))
    _run_expecting_refusals(harness)

    _assert_all_refused(harness, DOMAINS, "strangers")


def test_overlapping_lists_refused(identities):
    def overlap(domain, response):
        response.dropped.append(response.survivors[0])

    harness = _harness(
        identities,
        _rewrite(Stage.UNMASK, overlap),
        drop={"d003": Stage.MASKED_INPUT},
    )
    _run_expecting_refusals(harness)

    _assert_all_refused(harness, DOMAINS[:3], "both survivors and dropped")
    assert harness.session.revealed == {}


def test_stranger_in_dropped_refused(identities):
    def add(domain, response):
        response.dropped.append("mallory")

    harness = _harness(identities, _rewrite(Stage.UNMASK, add))
    _run_expecting_refusals(harness)

    _assert_all_refused(harness, DOMAINS, "strangers")


def test_changed_survivor_list_at_unmask_refused(identities):
    def shrink(domain, response):
        survivors = [s for s in response.survivors if s != "d003" or domain == "d003"]
        del response.survivors[:]
        response.survivors.extend(survivors)

    harness = _harness(identities, _rewrite(Stage.UNMASK, shrink))
    _run_expecting_refusals(harness)

    _assert_all_refused(harness, DOMAINS[:3], "another survivor list")


def test_different_survivor_lists_refused(identities):
    # Two halves each see a list of three; neither list gets three signatures.
    halves = {"d000": ["d000", "d001", "d002"], "d001": ["d000", "d001", "d002"]}
    other = ["d001", "d002", "d003"]

    def split(domain, response):
        wanted = halves.get(domain, other)
        del response.survivors[:]
        response.survivors.extend(wanted)

    def tamper(domain, stage, response):
        if stage in (Stage.CONSISTENCY_CHECK, Stage.UNMASK):
            return _rewrite(stage, split)(domain, stage, response)
        return response

    harness = _harness(identities, tamper)
    _run_expecting_refusals(harness)

    _assert_all_refused(harness, DOMAINS, "valid signatures")
    assert harness.session.revealed == {}


def test_unmask_asked_twice_refused(identities):
    harness = _harness(identities)
    harness.run()
    participant = harness.participants["d000"]
    request = harness.session.view("d000", Stage.UNMASK)

    with pytest.raises(RefusalError, match="each step runs once"):
        participant.unmask(request)


def test_active_mode_without_identity_refused():
    config = pb.SecAggConfig(enabled=True, mode="active", levels=2**16)
    task = pb.SecAggTask(aggregation_round=1, weight_cap=10)

    with pytest.raises(RefusalError, match="tls.cert"):
        Participant("d000", "run", config, task, None, np.random.default_rng(0))
