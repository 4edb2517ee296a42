"""The coordinator's secure-aggregation session against real client participants."""

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.pb import federation_pb2 as pb
from common.secagg.vector import train_layout
from server.errors import DuplicateError, InvalidRequestError, QuorumError
from server.errors import WrongStageError
from server.secagg import TRANSITIONS, Stage
from tests.support.secagg_harness import (
    DROP_STAGES,
    Harness,
    make_identities,
    survivors_of,
)

BOUND = 0.5
LEVELS = 2**16


def _layout(n_values: int = 40):
    # An empty tensor and a 0-d tensor sit between two ordinary ones.
    tensors = [("w", n_values), ("empty", 0), ("scalar", 1), ("b", 3)]
    return train_layout(tensors, [BOUND] * len(tensors))


def _vectors(domains, layout, seed=0, scale=0.2):
    """Weighted deltas with integer weights, as DomainModel.train_round makes."""
    rng = np.random.default_rng(seed)
    vectors = {}
    for index, domain in enumerate(domains):
        weight = float(index + 2)
        delta = rng.uniform(-scale, scale, layout.length - 1)
        vectors[domain] = np.append(delta * weight, weight)
    return vectors


def _plain_sum(vectors, domains):
    return sum(vectors[d] for d in domains)


def _tolerance(vectors, domains):
    # Each value is within one step per unit of weight of the plain sum.
    weight = sum(vectors[d][-1] for d in domains)
    return weight * 2 * BOUND / (LEVELS - 1) + 1e-9


def _names(n):
    return [f"d{i:03d}" for i in range(n)]


@pytest.fixture(scope="module")
def identities(tmp_path_factory):
    return make_identities(tmp_path_factory.mktemp("ids"), _names(6))


def test_transitions_every_pair():
    layout = _layout()
    for source, target in itertools.product(Stage, Stage):
        harness = Harness(layout, _vectors(_names(3), layout))
        harness.session.stage = source
        if target in TRANSITIONS[source]:
            harness.session._move_to(target)
            assert harness.session.stage is target
        else:
            with pytest.raises(RuntimeError, match="cannot move"):
                harness.session._move_to(target)


@pytest.mark.parametrize("n", [2, 3, 4, 10])
def test_secure_sum_equals_plain_sum(n):
    layout = _layout()
    vectors = _vectors(_names(n), layout, seed=n)

    total = Harness(layout, vectors).run()

    expected = _plain_sum(vectors, vectors)
    np.testing.assert_allclose(
        total, expected, rtol=0, atol=_tolerance(vectors, vectors)
    )
    assert total[-1] == expected[-1]


def test_secure_sum_hundred_clients_secagg_plus():
    layout = _layout(n_values=20)
    vectors = _vectors(_names(100), layout, seed=100)
    harness = Harness(layout, vectors, neighbours=10)

    total = harness.run()

    np.testing.assert_allclose(
        total, _plain_sum(vectors, vectors), rtol=0, atol=_tolerance(vectors, vectors)
    )
    assert harness.session.threshold == 6


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.sampled_from([2, 3, 4, 10]),
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(0.0, 0.5),
)
def test_secure_sum_property(n, seed, scale):
    layout = _layout(n_values=8)
    vectors = _vectors(_names(n), layout, seed=seed, scale=scale)

    total = Harness(layout, vectors).run()

    np.testing.assert_allclose(
        total, _plain_sum(vectors, vectors), rtol=0, atol=_tolerance(vectors, vectors)
    )


@pytest.mark.parametrize("stage", DROP_STAGES, ids=lambda s: s.name)
def test_dropout_at_each_stage(stage, identities):
    domains = _names(5)
    layout = _layout()
    vectors = _vectors(domains, layout, seed=7)
    harness = Harness(
        layout,
        vectors,
        mode="active",
        identities=identities,
        drop={"d002": stage},
    )

    total = harness.run()

    survivors = survivors_of(harness)
    np.testing.assert_allclose(
        total,
        _plain_sum(vectors, survivors),
        rtol=0,
        atol=_tolerance(vectors, survivors),
    )
    assert sorted(harness.session.survivors) == survivors


def test_two_dropouts_secagg_plus():
    domains = _names(12)
    layout = _layout()
    vectors = _vectors(domains, layout, seed=3)
    drop = {"d001": Stage.MASKED_INPUT, "d007": Stage.SHARE_KEYS}
    harness = Harness(layout, vectors, neighbours=6, drop=drop)

    total = harness.run()

    survivors = survivors_of(harness)
    np.testing.assert_allclose(
        total, _plain_sum(vectors, survivors), atol=_tolerance(vectors, survivors)
    )


def test_too_few_advertisements_fails_the_task():
    layout = _layout()
    vectors = _vectors(_names(4), layout)
    harness = Harness(layout, vectors, threshold=4)
    harness.drop = {"d000": Stage.ADVERTISE_KEYS}

    with pytest.raises(QuorumError, match="threshold"):
        harness.run()
    assert harness.session.stage is Stage.FAILED


def test_dropout_below_threshold_fails_the_task():
    layout = _layout()
    vectors = _vectors(_names(3), layout)
    harness = Harness(
        layout, vectors, drop={"d000": Stage.MASKED_INPUT, "d001": Stage.MASKED_INPUT}
    )

    with pytest.raises(QuorumError, match="fewer than the threshold 2"):
        harness.run()


def test_fresh_keys_for_two_hundred_rounds(identities):
    domains = _names(3)
    layout = _layout(n_values=16)
    for round_index in range(1, 201):
        vectors = _vectors(domains, layout, seed=round_index)
        harness = Harness(
            layout,
            vectors,
            mode="active",
            identities=identities,
            round_index=round_index,
        )
        total = harness.run()
        np.testing.assert_allclose(
            total, _plain_sum(vectors, domains), atol=_tolerance(vectors, domains)
        )


def test_masked_input_looks_uniform():
    layout = _layout(n_values=4000)
    vectors = _vectors(_names(3), layout, seed=11)
    harness = Harness(layout, vectors)
    harness.run()

    for domain, payload in harness.uploads.items():
        words = np.frombuffer(payload, dtype="<u4")
        plain = vectors[domain]

        # The plain vector's float64 bytes appear nowhere in the upload.
        assert plain.astype("<f8").tobytes()[:64] not in payload

        # Each of 16 equal bins of the uint32 range contains about 1/16 of the words.
        counts = np.bincount(words >> 28, minlength=16)
        expected = words.size / 16
        chi_square = float(((counts - expected) ** 2 / expected).sum())
        # 15 degrees of freedom: P(chi2 > 37.7) is about 0.001.
        assert chi_square < 37.7, (domain, counts)


def _advertised(harness, domains):
    for domain in domains:
        harness.session.advertise(domain, harness.participants[domain].advertise())


def test_duplicate_advertisement_rejected():
    layout = _layout()
    harness = Harness(layout, _vectors(_names(3), layout))
    advertisement = harness.participants["d000"].advertise()
    harness.session.advertise("d000", advertisement)

    with pytest.raises(DuplicateError):
        harness.session.advertise("d000", advertisement)


def test_advertisement_with_short_key_rejected():
    layout = _layout()
    harness = Harness(layout, _vectors(_names(3), layout))
    advertisement = harness.participants["d000"].advertise()
    advertisement.mask_public = b"short"

    with pytest.raises(InvalidRequestError, match="mask_public"):
        harness.session.advertise("d000", advertisement)


def test_advertisement_reusing_a_peer_key_rejected():
    layout = _layout()
    harness = Harness(layout, _vectors(_names(3), layout))
    first = harness.participants["d000"].advertise()
    harness.session.advertise("d000", first)
    second = harness.participants["d001"].advertise()
    second.mask_public = first.encryption_public

    with pytest.raises(InvalidRequestError, match="already uses"):
        harness.session.advertise("d001", second)


def test_active_mode_requires_signature():
    layout = _layout()
    harness = Harness(layout, _vectors(_names(3), layout))
    harness.session.settings = harness.session.settings.__class__(
        **{**harness.session.settings.__dict__, "mode": "active"}
    )

    with pytest.raises(InvalidRequestError, match="no signature"):
        harness.session.advertise("d000", harness.participants["d000"].advertise())


def test_shares_to_wrong_receivers_rejected():
    layout = _layout()
    harness = Harness(layout, _vectors(_names(3), layout))
    _advertised(harness, _names(3))
    harness.session.close_stage("task")
    roster = harness.session.view("d000", Stage.SHARE_KEYS)
    bundles = harness.participants["d000"].share_keys(roster)

    with pytest.raises(InvalidRequestError, match="one share bundle to each"):
        harness.session.share_keys("d000", bundles[:1])


def test_masked_input_wrong_length_rejected():
    layout = _layout()
    harness = Harness(layout, _vectors(_names(2), layout))
    harness.drop = {}
    _advertised(harness, _names(2))
    harness.session.close_stage("task")
    for domain in _names(2):
        roster = harness.session.view(domain, Stage.SHARE_KEYS)
        harness.session.share_keys(
            domain, harness.participants[domain].share_keys(roster)
        )
    harness.session.close_stage("task")

    with pytest.raises(InvalidRequestError, match="uint32 values"):
        harness.session.add_masked_input("d000", b"\0" * 12)


def test_action_in_wrong_stage_rejected():
    layout = _layout()
    harness = Harness(layout, _vectors(_names(3), layout))

    with pytest.raises(WrongStageError, match="ADVERTISE_KEYS"):
        harness.session.add_masked_input("d000", b"")


def test_reveal_of_both_share_kinds_rejected():
    layout = _layout()
    vectors = _vectors(_names(4), layout)
    harness = Harness(layout, vectors, drop={"d003": Stage.MASKED_INPUT})
    session = harness.session
    _advertised(harness, _names(4))
    session.close_stage("task")
    for domain in _names(4):
        roster = session.view(domain, Stage.SHARE_KEYS)
        session.share_keys(domain, harness.participants[domain].share_keys(roster))
    session.close_stage("task")
    for domain in _names(3):
        inbox = session.view(domain, Stage.MASKED_INPUT)
        payload, _ = harness.participants[domain].masked_input(inbox, vectors[domain])
        session.add_masked_input(domain, payload)
    session.close_stage("task")
    for domain in _names(3):
        view = session.view(domain, Stage.CONSISTENCY_CHECK)
        session.consistency_check(
            domain, harness.participants[domain].consistency_check(view)
        )
    session.close_stage("task")
    seeds, keys = harness.participants["d000"].unmask(
        session.view("d000", Stage.UNMASK)
    )
    survivor_key = pb.RevealedShare(owner="d001", share=keys[0].share)

    with pytest.raises(InvalidRequestError, match="may not reveal"):
        session.unmask("d000", seeds, [survivor_key])
