"""User-level DP-SGD and the noised round update of a domain."""

import numpy as np
import pytest
import torch

from client.data import Split
from client.privacy import DomainPrivacy, PrivateTraining, clip_l2, noisy_update
from client.securenoise import SecureGaussian
from client.session import DomainModel, item_code_table
from client.train import make_batches
from common.accounting import PrivacySettingError, user_mechanism
from common.config import ModelConfig, PrivacyConfig, TrainConfig
from common.model import SequenceRecommender

CONFIG = ModelConfig(
    hidden_size=16,
    n_layers=1,
    inner_size=32,
    n_subspaces=4,
    n_centroids=8,
    text_dim=8,
    n_prompt_words=2,
    dropout=0.0,
)
TRAIN = TrainConfig(rounds=3, local_epochs=1, batch_size=4)
DP = PrivacyConfig(enabled=True, noise_multiplier=1.0, max_grad_norm=0.5, delta=1e-3)
N_USERS = 20


def _sequences(seed: int = 0, count: int = N_USERS) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[int(i) for i in rng.integers(1, 13, size=7)] for _ in range(count)]


def _model() -> SequenceRecommender:
    torch.manual_seed(0)
    codes = torch.randint(0, 8, (13, 4))
    codes[0] = 0
    return SequenceRecommender(CONFIG, codes, domain_prompt=False)


def _training(model, dp=DP, seed=3) -> PrivateTraining:
    return PrivateTraining(
        model, TRAIN, DomainPrivacy(dp, N_USERS, noise_seed=seed), "books"
    )


def test_per_user_gradient_is_one_users_gradient():
    model = _model()
    training = _training(model)
    sequences = _sequences()[:3]

    gradients, _, _ = training.per_user_gradients(model, sequences)

    for user, sequence in enumerate(sequences):
        model.zero_grad(set_to_none=True)
        items, targets = next(make_batches([sequence], CONFIG.max_seq_len, 1))
        model.loss(items, targets).backward()
        for stacked, parameter in zip(gradients, training.parameters, strict=True):
            expected = parameter.grad
            if expected is None:
                expected = torch.zeros_like(parameter)
            torch.testing.assert_close(stacked[user], expected)


def test_each_user_gradient_is_clipped_to_bound():
    model = _model()
    dp = PrivacyConfig(
        enabled=True, noise_multiplier=1.0, max_grad_norm=1e-3, delta=1e-3
    )
    training = _training(model, dp)

    for sequence in _sequences()[:4]:
        gradients, _, _ = training.per_user_gradients(model, [sequence])
        raw = torch.linalg.vector_norm(torch.cat([g.flatten() for g in gradients]))
        training.optimizer.zero_grad(set_to_none=True)
        for parameter, sample in zip(training.parameters, gradients, strict=True):
            parameter.grad_sample = sample
        training.optimizer.clip_and_accumulate()
        summed = torch.cat([p.summed_grad.flatten() for p in training.parameters])

        assert float(raw) > 1e-3
        assert float(torch.linalg.vector_norm(summed)) <= 1e-3


def test_dp_sgd_noise_has_configured_scale():
    model = _model()
    dp = PrivacyConfig(
        enabled=True, noise_multiplier=2.0, max_grad_norm=0.5, delta=1e-3
    )
    training = _training(model, dp, seed=11)

    # No user drawn: each step's gradient is the noise alone, divided by the
    # expected batch size.
    draws = []
    for _ in range(10):
        training.optimizer.zero_grad(set_to_none=True)
        for parameter in training.parameters:
            parameter.grad_sample = torch.zeros((0, *parameter.shape))
        training.optimizer.pre_step()
        draws += [p.grad.flatten() * TRAIN.batch_size for p in training.parameters]
    noise = torch.cat(draws)

    # The standard error of the sample deviation is about 0.4 % here.
    assert noise.numel() > 30_000
    assert float(noise.std()) == pytest.approx(2.0 * 0.5, rel=0.02)
    assert abs(float(noise.mean())) < 0.02


def test_accountant_after_round_matches_coordinator_plan():
    model = _model()
    training = _training(model)

    loss = training.train_round(model, _sequences(), torch.Generator().manual_seed(0))

    plan = user_mechanism(DP, TRAIN, N_USERS)
    assert np.isfinite(loss)
    assert training.epsilon == pytest.approx(plan.epsilon(1), rel=1e-9)


def test_train_round_changes_only_global_part():
    model = _model()
    training = _training(model)
    before = {k: v.clone() for k, v in model.global_part.state_dict().items()}

    training.train_round(model, _sequences(), torch.Generator().manual_seed(0))

    changed = [
        k for k, v in model.global_part.state_dict().items() if not v.equal(before[k])
    ]
    assert "code_embedding.weight" in changed


def test_large_delta_is_rejected():
    dp = PrivacyConfig(enabled=True, noise_multiplier=1.0, delta=0.1)

    with pytest.raises(PrivacySettingError, match="dp.delta 0.1 is not below"):
        _training(_model(), dp)


def test_clip_l2_bounds_norm():
    rng = np.random.default_rng(5)
    for scale in (1e-3, 1.0, 1e3):
        vector = rng.standard_normal(1000) * scale

        clipped = clip_l2(vector, 0.5)

        assert np.linalg.norm(clipped) <= 0.5 + 1e-12
        if np.linalg.norm(vector) <= 0.5:
            np.testing.assert_array_equal(clipped, vector)


AGGREGATE = PrivacyConfig(
    enabled=True,
    noise_multiplier=1.0,
    delta=1e-3,
    aggregate_noise_multiplier=2.0,
    aggregate_clip=0.5,
    honest_domains=2,
)


def test_noisy_update_noise_has_configured_scale():
    delta = np.zeros(200_000)

    update = noisy_update(delta, AGGREGATE, 2.0, np.random.default_rng(17))

    # Two honest domains: each adds sigma * clip / sqrt(2) = 0.7071 per value.
    assert update[-1] == 1.0
    assert float(np.std(update[:-1])) == pytest.approx(2.0 * 0.5 / 2**0.5, rel=0.01)
    assert abs(float(np.mean(update[:-1]))) < 0.01


def test_uploaded_update_is_clipped_before_noise():
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((12, 8)).astype(np.float32)
    centroids = rng.standard_normal((4, 8, 2)).astype(np.float32)
    sequences = _sequences(1)
    split = Split(
        train=tuple(tuple(s[:-2]) for s in sequences),
        valid=tuple((tuple(s[:-2]), s[-2]) for s in sequences),
        test=tuple((tuple(s[:-1]), s[-1]) for s in sequences),
    )
    train = TrainConfig(rounds=3, local_epochs=1, batch_size=4, learning_rate=0.05)
    privacy = DomainPrivacy(AGGREGATE, N_USERS, 2.0, noise_seed=4)
    state = DomainModel(
        CONFIG, train, split, item_code_table(embeddings, centroids), 7, None, privacy
    )
    assert state.private is not None
    # Replay the noise the model draws, to take the upload apart.
    replay = SecureGaussian(4, "update")

    for _ in range(2):
        before = {k: v.clone() for k, v in state.model.global_part.state_dict().items()}
        vector = state.train_round()
        after = state.model.global_part.state_dict()
        raw = np.concatenate(
            [(after[k] - before[k]).double().flatten().numpy() for k in before]
        )
        noise = replay.normal(0.0, 2.0 * 0.5 / 2**0.5, size=raw.shape)
        clipped = vector[:-1] - noise

        assert vector[-1] == 1.0
        assert np.linalg.norm(raw) > 0.5
        assert np.linalg.norm(clipped) <= 0.5 + 1e-9
        np.testing.assert_allclose(clipped, raw * 0.5 / np.linalg.norm(raw))


def test_round_run_again_beyond_budget_is_rejected():
    plan = user_mechanism(DP, TRAIN, N_USERS)
    budget = (plan.epsilon(2) + plan.epsilon(3)) / 2
    dp = PrivacyConfig(
        enabled=True,
        noise_multiplier=1.0,
        target_epsilon=budget,
        max_grad_norm=0.5,
        delta=1e-3,
    )
    model = _model()
    training = _training(model, dp)
    generator = torch.Generator().manual_seed(0)

    # Two rounds spend the budget, so a third one, such as a round the
    # coordinator requests again after a restart, must not start.
    training.train_round(model, _sequences(), generator)
    training.train_round(model, _sequences(), generator)
    before = {k: v.clone() for k, v in model.global_part.state_dict().items()}
    with pytest.raises(PrivacySettingError, match="above dp.target_epsilon"):
        training.train_round(model, _sequences(), generator)

    after = model.global_part.state_dict()
    assert all(after[k].equal(v) for k, v in before.items())
    assert training.epsilon == pytest.approx(plan.epsilon(2))
