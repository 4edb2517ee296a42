"""Measure what differential privacy costs: NDCG@10 per domain against epsilon.

Runs, per seed, the local-only baseline and the federated model without DP,
then the federated model with user-level DP-SGD in every domain at each
target epsilon, all with the clients' own training code (bench.simulation).
Each DP variant derives its noise multiplier from the target epsilon over the
whole schedule, as a client does. It also times one local round of one domain
with and without DP-SGD. Writes bench/results/privacy.json and the "Privacy"
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from bench.quality import (
    QUICK_MODEL,
    QUICK_TRAIN,
    QUICK_USERS,
    SCHEDULES,
    load_domains,
    subsample_users,
)
from bench.docs_section import replace_section
from bench.simulation import (
    Domain,
    VariantResult,
    federated_codebook,
    run_federated,
    run_local_only,
)
from client.privacy import DomainPrivacy
from client.session import DomainModel, domain_seed, item_code_table
from common.accounting import user_mechanism
from common.config import ModelConfig, PrivacyConfig, TrainConfig

logger = logging.getLogger("bench.privacy")

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
HEADING = "## Privacy"
EPSILONS = (1.0, 3.0, 8.0)
# The clipping-only variant runs DP-SGD with this noise multiplier, whose
# noise is negligible next to the clipped gradients. It separates the cost of
# clipping and sampling from the cost of the noise.
CLIP_ONLY_NOISE = 1e-6


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(SCHEDULES), default="ml-1m")
    parser.add_argument("--domains", type=int, default=3, help="genre domains")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--epsilons",
        type=float,
        nargs="+",
        default=list(EPSILONS),
        help="user-level target epsilons of the DP variants",
    )
    parser.add_argument(
        "--delta", type=float, default=1e-5, help="user-level delta (dp.delta)"
    )
    parser.add_argument(
        "--clip-only",
        action="store_true",
        help="also run DP-SGD with clipping and sampling and a negligible noise "
        f"multiplier ({CLIP_ONLY_NOISE:g}), which guarantees nothing",
    )
    parser.add_argument(
        "--max-grad-norm",
        type=float,
        default=PrivacyConfig().max_grad_norm,
        help="per-user clipping bound (dp.max_grad_norm)",
    )
    parser.add_argument(
        "--rounds", type=int, default=0, help="rounds; 0 keeps the dataset schedule"
    )
    parser.add_argument(
        "--local-epochs",
        type=int,
        default=0,
        help="local epochs per round; 0 keeps the dataset schedule",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny subset, 1 seed, 2 rounds"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="sequences per batch, the expected batch of DP-SGD; 0 keeps the "
        "schedule's",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=0.0,
        help="AdamW learning rate; 0 keeps the schedule's",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--no-docs",
        action="store_true",
        help="leave docs/benchmarks.md unchanged",
    )
    return parser


def privacy_settings(
    domains: list[Domain],
    train: TrainConfig,
    args: argparse.Namespace,
    target: float | None,
) -> dict[str, DomainPrivacy]:
    """Return every domain's DP-SGD settings for one target epsilon.

    A ``target`` of None gives the clipping-only settings: noise multiplier
    CLIP_ONLY_NOISE and no budget.
    """
    dp = PrivacyConfig(
        enabled=True,
        target_epsilon=target or 0.0,
        noise_multiplier=CLIP_ONLY_NOISE if target is None else 0.0,
        delta=args.delta,
        max_grad_norm=args.max_grad_norm,
    )
    return {
        d.name: DomainPrivacy(dp, len(d.split.train), noise_seed=train.seed)
        for d in domains
    }


def best_test_ndcg(result: VariantResult) -> dict[str, float]:
    """Return each domain's test NDCG@10 at its best validation round."""
    return {name: result.best(name).test["ndcg@10"] for name in result.histories}


def run_variants(
    domains: list[Domain],
    model: ModelConfig,
    train: TrainConfig,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Run every variant for every seed; return NDCG@10 and seconds per variant."""
    variants: dict[str, Any] = {}

    def record(name: str, epsilon: float | None, result: VariantResult, seconds: float):
        entry = variants.setdefault(
            name, {"epsilon": epsilon, "ndcg@10": {}, "best_round": {}, "seconds": []}
        )
        for domain, value in best_test_ndcg(result).items():
            entry["ndcg@10"].setdefault(domain, []).append(value)
            best = result.best(domain).round
            entry["best_round"].setdefault(domain, []).append(best)
        entry["seconds"].append(round(seconds, 1))
        logger.info(
            "variant=%s seed done in %.0f s: %s", name, seconds, best_test_ndcg(result)
        )

    for seed in args.seeds:
        seeded = dataclasses.replace(train, seed=seed)
        started = time.monotonic()
        local = run_local_only(domains, model, seeded)
        record("local_only", None, local, time.monotonic() - started)

        centroids = federated_codebook(domains, model, seeded)
        started = time.monotonic()
        result, _ = run_federated(domains, model, seeded, centroids)
        record("federated", None, result, time.monotonic() - started)

        targets: list[float | None] = [*args.epsilons]
        if args.clip_only:
            targets.append(None)
        for target in targets:
            privacy = privacy_settings(domains, seeded, args, target)
            started = time.monotonic()
            result, _ = run_federated(domains, model, seeded, centroids, None, privacy)
            name = (
                "federated_clip_only"
                if target is None
                else f"federated_dp_eps{target:g}"
            )
            record(name, target, result, time.monotonic() - started)
            variants[name]["noise_multiplier"] = {
                d: user_mechanism(p.dp, seeded, p.n_users).noise_multiplier
                for d, p in privacy.items()
            }

    for entry in variants.values():
        entry["mean"] = {d: float(np.mean(v)) for d, v in entry["ndcg@10"].items()}
    return variants


def smallest_winning_epsilon(variants: dict[str, Any]) -> float | None:
    """Return the smallest epsilon whose mean NDCG@10 beats local-only everywhere."""
    local = variants["local_only"]["mean"]
    winners = [
        entry["epsilon"]
        for entry in variants.values()
        if entry["epsilon"] is not None
        and all(entry["mean"][d] > local[d] for d in local)
    ]
    return min(winners) if winners else None


def time_local_round(
    domain: Domain, model: ModelConfig, train: TrainConfig, args: argparse.Namespace
) -> dict[str, float]:
    """Time one local round of ``domain`` without and with DP-SGD, in seconds."""
    centroids = federated_codebook([domain], model, train)
    codes = item_code_table(domain.embeddings, centroids)
    seed = domain_seed(train.seed, domain.name)
    privacy = privacy_settings([domain], train, args, max(args.epsilons))
    timings = {}
    for label, setting in (("plain", None), ("dp_sgd", privacy[domain.name])):
        state = DomainModel(model, train, domain.split, codes, seed, None, setting)
        started = time.perf_counter()
        state.train_round()
        timings[label] = round(time.perf_counter() - started, 2)
    timings["ratio"] = round(timings["dp_sgd"] / timings["plain"], 1)
    return timings


def missing_runs(args: argparse.Namespace, train: TrainConfig) -> str:
    """Describe how this run falls short of the full study, in sentences."""
    gaps = []
    if args.quick:
        gaps.append(f"the quick subset of {QUICK_USERS} users per domain")
    if args.dataset != "ml-1m":
        gaps.append(f"{args.dataset} in place of ml-1m")
    if len(args.seeds) < 3:
        gaps.append(f"{len(args.seeds)} seed(s) in place of 3")
    if train != SCHEDULES[args.dataset] and not args.quick:
        gaps.append(
            f"rounds={train.rounds}, local_epochs={train.local_epochs}, "
            f"batch_size={train.batch_size}, learning_rate={train.learning_rate:g} "
            "in place of the demo schedule"
        )
    if not gaps:
        return "This run is the full study."
    return (
        "This run used "
        + ", ".join(gaps)
        + ". The full study (`make bench-privacy`: ml-1m, 3 seeds, the demo "
        "schedule) has not run yet."
    )


def render(results: dict[str, Any]) -> str:
    """Return the Privacy section of docs/benchmarks.md from ``results``."""
    variants = results["variants"]
    domains = list(variants["local_only"]["mean"])
    schedule = results["train"]
    clip_only = ""
    if "federated_clip_only" in variants:
        clip_only = (
            " federated_clip_only runs the same DP-SGD (Poisson sampling, "
            f"per-user clipping) with noise multiplier {CLIP_ONLY_NOISE:g}, so "
            "it guarantees nothing and shows what clipping alone costs."
        )
    lines = [
        f"{HEADING}\n",
        f"Measured by `{results['command']}` on {results['date']}, "
        f"{results['machine']}, in {results['elapsed_s']:.0f} s. Dataset "
        f"{results['dataset']}{' (quick subset)' if results['quick'] else ''}, "
        f"{len(domains)} genre domains, seeds {results['seeds']}, "
        f"{schedule['rounds']} rounds of {schedule['local_epochs']} local epochs, "
        f"batch {schedule['batch_size']}. The raw results are in "
        "bench/results/privacy.json.\n",
        "Test NDCG@10 at the best validation round, mean over seeds. The DP "
        "variants train every domain with user-level DP-SGD (one user's sequence "
        f"is one privacy unit, clipping bound {results['max_grad_norm']:g}, "
        f"delta {results['delta']:g}); epsilon is each domain's user-level "
        "budget over the whole schedule (RDP accountant). Domain-level noise "
        "on the aggregate is off here. Local-only and federated train without "
        "DP. Every variant picks its best round on the domain's validation "
        "data, a choice that stays in the domain and is not itself private."
        + clip_only
        + "\n",
        "| variant | epsilon | " + " | ".join(domains) + " |",
        "|---|---|" + "---|" * len(domains),
    ]
    for name, entry in variants.items():
        epsilon = "-" if entry["epsilon"] is None else f"{entry['epsilon']:g}"
        if name == "federated_clip_only":
            epsilon = "none (no noise)"
        cells = " | ".join(f"{entry['mean'][d]:.4f}" for d in domains)
        lines.append(f"| {name} | {epsilon} | {cells} |")
    winner = results["smallest_epsilon_beating_local_only"]
    lines.append("")
    lines.append(
        "Smallest epsilon at which the federated model beats local-only on every "
        + (
            f"domain: {winner:g}."
            if winner is not None
            else "domain: none of the measured ones."
        )
    )
    overhead = results["local_round_seconds"]
    lines.append(
        f"\nOne local round of domain {overhead['domain']}: "
        f"{overhead['plain']:.2f} s without DP, {overhead['dp_sgd']:.2f} s with "
        f"DP-SGD, {overhead['ratio']:g} times as long. DP-SGD computes each "
        "drawn user's gradient with its own backward pass.\n"
    )
    lines.append(f"{results['not_run']}\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True
    )
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    started = time.monotonic()

    train = SCHEDULES[args.dataset]
    model = ModelConfig()
    domains = load_domains(args.dataset, args.domains, args.work)
    results_dir = args.results
    if args.quick:
        train, model = QUICK_TRAIN, QUICK_MODEL
        args.seeds = args.seeds[:1]
        domains = [
            subsample_users(d, QUICK_USERS / len(d.split.train), 0) for d in domains
        ]
        results_dir = results_dir / "quick"
    if args.rounds:
        train = dataclasses.replace(train, rounds=args.rounds)
    if args.local_epochs:
        train = dataclasses.replace(train, local_epochs=args.local_epochs)
    if args.batch_size:
        train = dataclasses.replace(train, batch_size=args.batch_size)
    if args.learning_rate:
        train = dataclasses.replace(train, learning_rate=args.learning_rate)

    variants = run_variants(domains, model, train, args)
    results: dict[str, Any] = {
        "command": "python -m bench.privacy " + " ".join(argv or sys.argv[1:]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or 'cpu'}, "
        f"{args.threads} torch thread(s)",
        "dataset": args.dataset,
        "quick": args.quick,
        "seeds": args.seeds,
        "delta": args.delta,
        "max_grad_norm": args.max_grad_norm,
        "model": dataclasses.asdict(model),
        "train": dataclasses.asdict(train),
        "domains": {d.name: len(d.split.train) for d in domains},
        "variants": variants,
        "smallest_epsilon_beating_local_only": smallest_winning_epsilon(variants),
        "local_round_seconds": {
            "domain": domains[0].name,
            **time_local_round(domains[0], model, train, args),
        },
        "not_run": missing_runs(args, train),
    }
    results["elapsed_s"] = round(time.monotonic() - started, 1)

    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / "privacy.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    if not args.no_docs and not args.quick:
        replace_section(DOCS, HEADING, render(results))
    print(render(results))
    print(f"wrote {path} after {results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
