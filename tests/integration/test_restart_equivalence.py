"""A restarted run against an uninterrupted one with the same seeds.

Both runs use the federation of test_coordinator_restart (three domains,
three rounds, secure aggregation). The restarted run's coordinator is killed
with SIGKILL right after the commit of codebook step 1, right after the
commit of round 1, and inside round 3 after the masked inputs were accepted.

Every checkpoint committed before the interrupted round must equal the
uninterrupted run's bit for bit. A resume after a commit reloads the exact
float32 state and hands out the same secure-aggregation numbers. The clients
kept their local state, so nothing random is drawn again.

The round that was interrupted cannot match, for two reasons. Its new
attempt gets a fresh aggregation number, and each client seeds the
stochastic rounding of its quantized update with that number, so the
rounding differs by up to one quantization step per value. And the clients
already trained once in the lost attempt, so their optimizer moments and
shuffling generator have moved on, and the retrained update differs. The
restart test checks instead that such a round applies exactly the mean of
the attempt that committed it.
"""

import numpy as np
import pytest
from safetensors.numpy import load_file

from server.checkpoints import codebook_checkpoint, round_checkpoint
from tests.integration.test_coordinator_restart import ROUNDS, run_with_kills

KILL_POINTS = ("codebook-1:committed", "train-1:committed", "train-3:MASKED_INPUT")
INTERRUPTED_ROUND = 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    reference = run_with_kills(tmp_path_factory.mktemp("uninterrupted"), ())
    restarted = run_with_kills(tmp_path_factory.mktemp("interrupted"), KILL_POINTS)
    return reference, restarted


def _checkpoint(run: dict, kind: str, number: int) -> dict[str, np.ndarray]:
    state = run["root"] / "coordinator" / "state"
    path = (
        codebook_checkpoint(state, number)
        if kind == "codebook"
        else round_checkpoint(state, number)
    )
    return load_file(path)


def test_both_runs_finish(runs):
    reference, restarted = runs

    assert reference["coordinator"].returncode == 0, reference["log"][-3000:]
    assert restarted["coordinator"].returncode == 0, restarted["log"][-3000:]
    assert len(restarted["kill_codes"]) == len(KILL_POINTS)


@pytest.mark.parametrize(
    ("kind", "number"),
    [("codebook", 0), ("codebook", 1)]
    + [("round", r) for r in range(1, INTERRUPTED_ROUND)],
)
def test_checkpoint_before_interruption_identical(runs, kind, number):
    reference, restarted = runs
    expected = _checkpoint(reference, kind, number)
    actual = _checkpoint(restarted, kind, number)

    assert sorted(actual) == sorted(expected)
    for tensor in expected:
        np.testing.assert_array_equal(actual[tensor], expected[tensor], tensor)


def test_interrupted_round_has_same_shapes(runs):
    reference, restarted = runs
    expected = _checkpoint(reference, "round", ROUNDS)
    actual = _checkpoint(restarted, "round", ROUNDS)

    assert {k: v.shape for k, v in actual.items()} == {
        k: v.shape for k, v in expected.items()
    }
    assert all(np.isfinite(v).all() for v in actual.values())
