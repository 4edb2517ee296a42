"""The quality study: run the variants over several seeds and compare them per user."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.simulation import (
    Domain,
    VariantResult,
    federated_codebook,
    run_federated,
    run_local_only,
    run_pooled,
    run_prompt_tuning,
)
from common.config import ModelConfig, PromptConfig, TrainConfig

logger = logging.getLogger(__name__)

# The in-process variants. RecBole's SASRec runs in its own environment instead.
VARIANTS = ("local_only", "federated", "domain_prompt", "full", "pooled")
METRICS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")
# (variant, baseline) pairs whose per-user NDCG@10 differences are reported.
COMPARISONS = (
    ("full", "local_only"),
    ("federated", "local_only"),
    ("domain_prompt", "federated"),
    ("full", "federated"),
    ("full", "pooled"),
)
BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class StudyConfig:
    """Settings of one study run. ``prompt`` applies to the two prompt variants."""

    model: ModelConfig
    train: TrainConfig
    prompt: PromptConfig
    seeds: tuple[int, ...]
    variants: tuple[str, ...] = VARIANTS

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(
                f"unknown variants {unknown}, so choose from {', '.join(VARIANTS)}"
            )
        if not self.seeds:
            raise ValueError("seeds is empty, so give at least one seed")


def run_seed(
    domains: Sequence[Domain], config: StudyConfig, seed: int
) -> dict[str, VariantResult]:
    """Run every requested variant once with ``seed`` as the run seed."""
    train = dataclasses.replace(config.train, seed=seed)
    requested = set(config.variants)
    results: dict[str, VariantResult] = {}

    started = time.monotonic()
    if "local_only" in requested:
        results["local_only"] = run_local_only(domains, config.model, train)
        logger.info("seed=%d local_only done after %.0f s", seed, _since(started))

    needs_federation = requested & {"federated", "domain_prompt", "full"}
    needs_codebook = needs_federation or "pooled" in requested
    centroids = (
        federated_codebook(domains, config.model, train) if needs_codebook else None
    )
    if needs_federation and centroids is not None:
        federated, states = run_federated(domains, config.model, train, centroids)
        results["federated"] = federated
        logger.info("seed=%d federated done after %.0f s", seed, _since(started))
        # Both prompt variants tune on the same pre-trained global part.
        if "domain_prompt" in requested:
            prompt = dataclasses.replace(config.prompt, user_prompt=False)
            results["domain_prompt"] = run_prompt_tuning(states, prompt)
        if "full" in requested:
            prompt = dataclasses.replace(
                config.prompt, domain_prompt=True, user_prompt=True
            )
            results["full"] = run_prompt_tuning(states, prompt)
        logger.info("seed=%d prompt variants done after %.0f s", seed, _since(started))
    if "pooled" in requested and centroids is not None:
        results["pooled"] = run_pooled(domains, config.model, train, centroids)
        logger.info("seed=%d pooled done after %.0f s", seed, _since(started))
    return {name: results[name] for name in VARIANTS if name in results}


def _since(started: float) -> float:
    return time.monotonic() - started


def ndcg_at(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """Per-user NDCG@k of one target each: 1 / log2(rank + 1) when rank <= k."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)


def sign_test_p(differences: np.ndarray) -> float:
    """Two-sided exact sign test of the nonzero differences; 1.0 if there are none."""
    positive = int((differences > 0).sum())
    negative = int((differences < 0).sum())
    n = positive + negative
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(positive, negative) + 1))
    return min(1.0, 2.0 * tail / 2.0**n)


def paired_comparison(
    variant: np.ndarray, baseline: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """Compare per-user NDCG@10 of two models on the same test users.

    Returns the mean difference, its standard error, a 95% percentile-bootstrap
    interval over users, the relative difference of the means and the p-value
    of a two-sided sign test.

    Raises
    ------
    ValueError
        If the arrays differ in length or are empty.
    """
    if variant.shape != baseline.shape or variant.size == 0:
        raise ValueError(
            f"per-user scores must be equal-length and non-empty, got "
            f"{variant.shape} and {baseline.shape}"
        )
    differences = variant - baseline
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, differences.size, (BOOTSTRAP_SAMPLES, differences.size))
    means = differences[samples].mean(axis=1)
    base = float(baseline.mean())
    return {
        "variant_mean": float(variant.mean()),
        "baseline_mean": base,
        "difference": float(differences.mean()),
        "standard_error": float(differences.std(ddof=1) / math.sqrt(differences.size))
        if differences.size > 1
        else float("nan"),
        "ci95_low": float(np.percentile(means, 2.5)),
        "ci95_high": float(np.percentile(means, 97.5)),
        "relative": float(differences.mean() / base) if base > 0 else float("nan"),
        "sign_test_p": sign_test_p(differences),
        "users": int(differences.size),
    }


def summarize(runs: Sequence[dict[str, VariantResult]]) -> dict[str, Any]:
    """Aggregate the runs of all seeds into the study's result tables.

    Returns
    -------
    dict
        ``variants[v][d]``: per test metric the mean, standard deviation and
        per-seed values at the best validation round, plus the best rounds.
        ``mean_over_domains[v]``: each metric's mean over domains.
        ``comparisons``: for each pair of ``COMPARISONS`` present and each
        domain, a paired per-user comparison of NDCG@10 averaged over seeds.
    """
    variants: dict[str, Any] = {}
    for name in VARIANTS:
        if name not in runs[0]:
            continue
        per_domain: dict[str, Any] = {}
        for domain in runs[0][name].histories:
            best = [run[name].best(domain) for run in runs]
            entry: dict[str, Any] = {"best_round": [b.round for b in best]}
            for metric in METRICS:
                values = [b.test[metric] for b in best]
                entry[metric] = {
                    "mean": float(np.mean(values)),
                    "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                    "values": values,
                }
            per_domain[domain] = entry
        variants[name] = per_domain

    mean_over_domains = {
        name: {
            metric: float(np.mean([entry[metric]["mean"] for entry in table.values()]))
            for metric in METRICS
        }
        for name, table in variants.items()
    }

    comparisons = []
    for name, baseline in COMPARISONS:
        if name not in runs[0] or baseline not in runs[0]:
            continue
        for domain in runs[0][name].ranks:
            variant_scores = np.mean(
                [ndcg_at(run[name].ranks[domain]) for run in runs], axis=0
            )
            baseline_scores = np.mean(
                [ndcg_at(run[baseline].ranks[domain]) for run in runs], axis=0
            )
            comparisons.append(
                {
                    "variant": name,
                    "baseline": baseline,
                    "domain": domain,
                    **paired_comparison(variant_scores, baseline_scores),
                }
            )
    return {
        "variants": variants,
        "mean_over_domains": mean_over_domains,
        "comparisons": comparisons,
    }


def validation_curves(
    run: dict[str, VariantResult],
) -> dict[str, dict[str, list[float]]]:
    """Validation NDCG@10 per evaluation, per variant and domain, of one run.

    For the prompt variants the curve is the federated curve followed by the
    prompt-tuning epochs (candidate 0 is the federated best, so it is skipped).
    """
    curves: dict[str, dict[str, list[float]]] = {}
    for name, result in run.items():
        curves[name] = {}
        for domain, history in result.histories.items():
            values = [h.valid["ndcg@10"] for h in history]
            if name in ("domain_prompt", "full") and "federated" in run:
                federated = run["federated"].histories[domain]
                values = [h.valid["ndcg@10"] for h in federated] + values[1:]
            curves[name][domain] = values
    return curves
