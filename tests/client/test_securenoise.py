"""The cryptographic noise generator: AES-256-CTR bytes, Gaussian samples."""

import math

import numpy as np
import pytest

from client.securenoise import SUMMED_SAMPLES, AesCtrStream, SecureGaussian

# NIST SP 800-38A, F.5.5 CTR-AES256.Encrypt, first two blocks.
NIST_KEY = bytes.fromhex(
    "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"
)
NIST_COUNTER = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
NIST_PLAINTEXT = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
)
NIST_CIPHERTEXT = bytes.fromhex(
    "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
)


def test_stream_matches_nist_ctr_vector():
    stream = AesCtrStream(NIST_KEY, NIST_COUNTER)

    # Split reads continue the counter.
    keystream = stream.read(5) + stream.read(27)
    ciphertext = bytes(a ^ b for a, b in zip(keystream, NIST_PLAINTEXT, strict=True))

    assert ciphertext == NIST_CIPHERTEXT


def test_stream_rejects_short_key():
    with pytest.raises(ValueError, match="32 bytes for AES-256, got 16"):
        AesCtrStream(bytes(16))


def test_seeded_generators_replay_and_streams_differ():
    first = SecureGaussian(3, "update").normal(0.0, 1.0, 100)
    again = SecureGaussian(3, "update").normal(0.0, 1.0, 100)
    other = SecureGaussian(3, "dp-sgd").normal(0.0, 1.0, 100)

    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_unseeded_generators_differ():
    first = SecureGaussian().normal(size=50)
    second = SecureGaussian().normal(size=50)

    assert not np.array_equal(first, second)


def test_uniform_is_in_half_open_unit_interval():
    values = SecureGaussian(0).uniform(100_000)

    assert values.min() > 0.0
    assert values.max() <= 1.0
    assert float(values.mean()) == pytest.approx(0.5, abs=0.005)


def test_normal_has_requested_moments_and_shape():
    values = SecureGaussian(1).normal(2.0, 3.0, (400, 500))
    standard = (values - 2.0) / 3.0

    assert values.shape == (400, 500)
    # Standard errors at 200,000 samples: 0.0022 for the mean, about 0.0016
    # for the deviation and 0.022 for the fourth moment.
    assert abs(float(standard.mean())) < 0.01
    assert float(standard.std()) == pytest.approx(1.0, abs=0.008)
    assert float(np.mean(standard**4)) == pytest.approx(3.0, abs=0.1)
    # The share beyond 1.96 deviations of a normal distribution is 5.0%.
    assert float(np.mean(np.abs(standard) > 1.96)) == pytest.approx(0.05, abs=0.003)


def test_normal_sums_four_box_muller_samples():
    seeded = SecureGaussian(8)
    replay = SecureGaussian(8)

    value = seeded.normal(0.0, 1.0, 3)
    samples = replay.standard_normal(SUMMED_SAMPLES * 3).reshape(SUMMED_SAMPLES, 3)

    np.testing.assert_allclose(value, samples.sum(axis=0) / math.sqrt(SUMMED_SAMPLES))


def test_normal_rejects_negative_scale():
    with pytest.raises(ValueError, match="scale must be 0 or more, got -1"):
        SecureGaussian(0).normal(0.0, -1.0, 3)
