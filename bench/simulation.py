"""In-process simulation of a federation, built on the clients' own training code.

The study runs every variant in one process so that several seeds fit on a small
machine. Each domain trains with ``client.session.DomainModel``, exactly as the
client process does, and the aggregation step is the coordinator's FedAvg: the
sum of the uploaded vectors divided by their summed weight. Secure aggregation
returns that same sum, so leaving it out changes no number.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from client.itemcodes import cluster_stats, moment_stats, train_local_codebook
from client.privacy import DomainPrivacy
from client.session import (
    DomainModel,
    Evaluation,
    best_evaluation,
    domain_seed,
    item_code_table,
)
from client.split import Split
from client.train import evaluate, make_batches
from common import pq
from common.config import ModelConfig, PromptConfig, TrainConfig
from common.model import GlobalEncoder, SequenceRecommender, load_global_state_dict

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Domain:
    """One domain's private inputs: its split and its item text embeddings."""

    name: str
    split: Split
    embeddings: np.ndarray


@dataclass
class VariantResult:
    """Per-domain evaluation history and per-user test ranks at the best round.

    ``histories[d][r]`` is round r (for prompt tuning: candidate r, 0 = no
    prompt). ``ranks[d][u]`` is user u's test target rank under the state that
    scored best on validation NDCG@10.
    """

    histories: dict[str, list[Evaluation]] = field(default_factory=dict)
    ranks: dict[str, np.ndarray] = field(default_factory=dict)

    def best(self, domain: str) -> Evaluation:
        """Return the domain's evaluation with the best validation NDCG@10."""
        return best_evaluation(self.histories[domain])


def user_test_ranks(model: SequenceRecommender, split: Split) -> np.ndarray:
    """Rank every user's test target with ``model``; int64 [n_users], 1 = top."""
    result = evaluate(model, split.test, model.config.max_seq_len)
    if result.ranks is None:
        raise RuntimeError("evaluate returned no ranks")
    return result.ranks.numpy()


def federated_codebook(
    domains: Sequence[Domain], model: ModelConfig, train: TrainConfig
) -> np.ndarray:
    """Run the coordinator's k-means over the summed statistics of all domains."""
    moments = [moment_stats(d.embeddings) for d in domains]
    total = sum(m[0] for m in moments)
    squares = sum(m[1] for m in moments)
    count = sum(m[2] for m in moments)
    centroids = pq.initial_centroids(
        total, squares, count, model.n_subspaces, model.n_centroids, train.seed
    )
    for step in range(1, train.kmeans_iterations + 1):
        stats = [cluster_stats(d.embeddings, centroids) for d in domains]
        sums = sum(s[0] for s in stats)
        counts = sum(s[1] for s in stats)
        centroids, _ = pq.update_centroids(
            centroids, sums, counts, pq.iteration_rng(train.seed, step)
        )
    return centroids


def initial_global_state(model: ModelConfig, seed: int) -> dict[str, torch.Tensor]:
    """Initialize the global encoder from the run seed, as the coordinator does."""
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in GlobalEncoder(model).state_dict().items()}


def _domain_states(
    domains: Sequence[Domain],
    model: ModelConfig,
    train: TrainConfig,
    centroids: np.ndarray,
    prompt: PromptConfig | None = None,
    privacy: Mapping[str, DomainPrivacy] | None = None,
) -> dict[str, DomainModel]:
    return {
        d.name: DomainModel(
            model,
            train,
            d.split,
            item_code_table(d.embeddings, centroids),
            domain_seed(train.seed, d.name),
            prompt,
            (privacy or {}).get(d.name),
            d.name,
        )
        for d in domains
    }


def _record_best(state: DomainModel, result: Evaluation) -> None:
    state.keep_if_best(result, None, {})


def run_federated(
    domains: Sequence[Domain],
    model: ModelConfig,
    train: TrainConfig,
    centroids: np.ndarray,
    prompt: PromptConfig | None = None,
    privacy: Mapping[str, DomainPrivacy] | None = None,
) -> tuple[VariantResult, dict[str, DomainModel]]:
    """Run ``train.rounds`` FedAvg rounds; return the results and each domain's state.

    Each state holds its best round in memory (``DomainModel.best_state``). When
    ``prompt`` is given, its branches are built but stay inactive, as in the client.
    ``privacy`` maps a domain to its DP settings; domains not in it train
    without DP.
    """
    states = _domain_states(domains, model, train, centroids, prompt, privacy)
    result = VariantResult({name: [] for name in states})
    weights = initial_global_state(model, train.seed)

    for round_index in range(1, train.rounds + 2):
        total: np.ndarray | None = None
        for name, state in states.items():
            load_global_state_dict(state.model, weights)
            evaluation = state.evaluate(round_index - 1)
            result.histories[name].append(evaluation)
            _record_best(state, evaluation)
            if round_index > train.rounds:
                continue
            vector = state.train_round()
            total = vector if total is None else total + vector
        if total is None:
            break

        # FedAvg: the weighted sum of deltas divided by the summed weight.
        mean_delta = torch.from_numpy(total[:-1] / total[-1])
        offset = 0
        for key, value in weights.items():
            size = value.numel()
            delta = mean_delta[offset : offset + size].view(value.shape)
            weights[key] = (value.double() + delta).float()
            offset += size
        logger.info(
            "federated round=%d valid_ndcg@10=%s",
            round_index,
            {n: round(h[-1].valid["ndcg@10"], 4) for n, h in result.histories.items()},
        )

    for name, state in states.items():
        state.restore_best()
        result.ranks[name] = user_test_ranks(state.model, state.split)
    return result, states


def run_prompt_tuning(
    pretrained: dict[str, DomainModel], prompt: PromptConfig
) -> VariantResult:
    """Tune fresh prompts on each domain's best pre-trained global part.

    The pre-trained states are left unchanged: each domain gets a new DomainModel
    with the prompt branches of ``prompt``, its global part and item codes copied
    from the pre-trained best state.
    """
    result = VariantResult()
    for name, source in pretrained.items():
        source.restore_best()
        tuned = DomainModel(
            source.model_config,
            source.train_config,
            source.split,
            source.model.item_codes,
            domain_seed(source.train_config.seed, name),
            prompt,
        )
        load_global_state_dict(
            tuned.model,
            {k: v.clone() for k, v in source.model.global_part.state_dict().items()},
        )
        rounds = source.train_config.rounds
        history = tuned.tune_prompts(rounds)
        result.histories[name] = history
        result.ranks[name] = user_test_ranks(tuned.model, tuned.split)
    return result


def run_local_only(
    domains: Sequence[Domain], model: ModelConfig, train: TrainConfig
) -> VariantResult:
    """Train each domain alone, as ``client.baseline.train_local_only`` does."""
    result = VariantResult()
    for domain in domains:
        seed = domain_seed(train.seed, domain.name)
        centroids = train_local_codebook(
            domain.embeddings,
            model.n_subspaces,
            model.n_centroids,
            train.kmeans_iterations,
            seed,
        )
        state = DomainModel(
            model,
            train,
            domain.split,
            item_code_table(domain.embeddings, centroids),
            seed,
        )
        history = [state.evaluate(0)]
        _record_best(state, history[0])
        for round_index in range(1, train.rounds + 1):
            state.train_round()
            history.append(state.evaluate(round_index))
            _record_best(state, history[-1])
        state.restore_best()
        result.histories[domain.name] = history
        result.ranks[domain.name] = user_test_ranks(state.model, domain.split)
    return result


def run_pooled(
    domains: Sequence[Domain],
    model: ModelConfig,
    train: TrainConfig,
    centroids: np.ndarray,
) -> VariantResult:
    """Train one global part on all domains' sequences in one place.

    This is the non-private upper bound. Every domain model shares one
    GlobalEncoder and one AdamW. Each epoch visits every batch of every domain
    once, in an order shuffled across domains, and each batch's softmax runs
    over its own domain's items. Evaluation happens every ``local_epochs``
    epochs, so "round" r has seen as many epochs as federated round r.
    """
    states = _domain_states(domains, model, train, centroids)
    shared = next(iter(states.values())).model.global_part
    load_global_state_dict(
        next(iter(states.values())).model, initial_global_state(model, train.seed)
    )
    for state in states.values():
        state.model.global_part = shared
    optimizer = torch.optim.AdamW(
        shared.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay
    )
    generator = torch.Generator().manual_seed(train.seed)
    result = VariantResult({name: [] for name in states})
    best_global: dict[str, dict[str, torch.Tensor]] = {}

    for round_index in range(train.rounds + 1):
        if round_index > 0:
            for _ in range(train.local_epochs):
                _pooled_epoch(states, optimizer, generator)
        for name, state in states.items():
            evaluation = state.evaluate(round_index)
            history = result.histories[name]
            if (
                not history
                or evaluation.valid["ndcg@10"]
                > best_evaluation(history).valid["ndcg@10"]
            ):
                best_global[name] = {
                    k: v.detach().clone() for k, v in shared.state_dict().items()
                }
            history.append(evaluation)

    for name, state in states.items():
        shared.load_state_dict(best_global[name])
        result.ranks[name] = user_test_ranks(state.model, state.split)
    return result


def _pooled_epoch(
    states: dict[str, DomainModel],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> None:
    batches = []
    for name, state in states.items():
        for items, targets in make_batches(
            state.split.train,
            state.model_config.max_seq_len,
            state.train_config.batch_size,
            generator,
        ):
            batches.append((name, items, targets))
    order = torch.randperm(len(batches), generator=generator).tolist()
    for index in order:
        name, items, targets = batches[index]
        model = states[name].model
        model.train()
        optimizer.zero_grad(set_to_none=True)
        model.loss(items, targets).backward()
        optimizer.step()
