"""Run the recommendation-quality study on MovieLens genre domains.

Variants 1-5 (local-only, federated, + domain prompt, + user prompt, pooled) run
in one process with the clients' own training code. Writes quality.json,
quality-<dataset>.md and two PNG plots per dataset into the results folder.
``--quick`` runs a tiny subset into <results>/quick to check the pipeline.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from bench.plots import plot_ndcg, plot_validation
from bench.simulation import Domain
from bench.study import (
    METRICS,
    VARIANTS,
    StudyConfig,
    run_seed,
    summarize,
    validation_curves,
)
from client.data import load_domain
from client.itemcodes import embed_items
from client.movielens import build_movielens_domains
from client.split import Split, split_leave_one_out
from common.config import CLIP_GROUPS, ModelConfig, PromptConfig, TrainConfig

logger = logging.getLogger("bench.quality")

ROOT = Path(__file__).resolve().parent.parent
# The demo's schedules, so the study measures what `make demo` runs.
SCHEDULES = {
    "ml-100k": TrainConfig(rounds=20, local_epochs=5, kmeans_iterations=10),
    "ml-1m": TrainConfig(rounds=10, local_epochs=3, kmeans_iterations=10),
}
QUICK_USERS = 60
QUICK_TRAIN = TrainConfig(rounds=2, local_epochs=1, kmeans_iterations=2)
QUICK_MODEL = ModelConfig(
    hidden_size=32, n_layers=1, inner_size=64, n_subspaces=8, n_centroids=16
)
SPARSE_FRACTION = 0.2
RECBOLE_PYTHON = ROOT / "bench" / ".venv-recbole" / "bin" / "python"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(SCHEDULES), default="ml-100k")
    parser.add_argument(
        "--domains", type=int, default=3, help="number of genre domains"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="run seeds"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(VARIANTS),
        help="variants to run",
    )
    parser.add_argument("--prompt-epochs", type=int, default=PromptConfig().epochs)
    parser.add_argument(
        "--prompt-lr",
        type=float,
        default=PromptConfig().learning_rate,
        help="learning rate of the prompt parameters in prompt tuning",
    )
    parser.add_argument(
        "--scoring",
        choices=("cosine", "dot"),
        default=ModelConfig().scoring,
        help="scoring function of every variant",
    )
    parser.add_argument(
        "--n-subspaces",
        type=int,
        default=ModelConfig().n_subspaces,
        help="codebook sub-spaces D of every variant",
    )
    parser.add_argument(
        "--n-centroids",
        type=int,
        default=ModelConfig().n_centroids,
        help="codebook centroids M per sub-space of every variant",
    )
    parser.add_argument(
        "--finetune-global",
        nargs="*",
        choices=CLIP_GROUPS,
        default=list(PromptConfig().finetune_global),
        help="global groups that the prompt variants fine-tune locally "
        "(none: the global part stays frozen)",
    )
    parser.add_argument(
        "--finetune-lr",
        type=float,
        default=PromptConfig().finetune_learning_rate,
        help="learning rate of the fine-tuned global groups",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="federated rounds of every variant; 0 keeps the dataset's schedule",
    )
    parser.add_argument(
        "--local-epochs",
        type=int,
        default=0,
        help="local epochs per round; 0 keeps the dataset's schedule",
    )
    parser.add_argument(
        "--sparse",
        nargs="*",
        metavar="DOMAIN",
        help="also run the sparse-domain scenario "
        f"({SPARSE_FRACTION * 100:.0f}%% of one domain's users) for each named "
        "domain in turn, or for every domain when none is named",
    )
    parser.add_argument(
        "--sparse-only",
        action="store_true",
        help="run only the sparse-domain scenario and write "
        "quality-sparse-<dataset>.json",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny subset, 1 seed, 2 rounds"
    )
    parser.add_argument(
        "--recbole-epochs",
        type=int,
        default=100,
        help="maximum SASRec epochs (0 skips RecBole; it also needs "
        "`make bench-recbole-env`)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch and faiss threads per process"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="seeds run in parallel, one process each with --threads threads",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=ROOT / "runs" / "bench",
        help="data and embedding cache",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    return parser


def load_domains(dataset: str, n_domains: int, work: Path) -> list[Domain]:
    """Build (once) and load the genre domains with their item embeddings."""
    folder = work / "data" / f"{dataset}-{n_domains}"
    if not folder.is_dir():
        build_movielens_domains(dataset, n_domains, folder)
    domains = []
    for path in sorted(p for p in folder.iterdir() if p.is_dir()):
        data = load_domain(path)
        embeddings = embed_items(data.item_texts, work / "cache")
        domains.append(Domain(data.name, split_leave_one_out(data), embeddings))
    return domains


def subsample_users(domain: Domain, fraction: float, seed: int) -> Domain:
    """Keep a seeded random ``fraction`` of the domain's users, all items kept."""
    n_users = len(domain.split.train)
    keep = max(1, round(n_users * fraction))
    chosen = sorted(np.random.default_rng(seed).choice(n_users, keep, replace=False))
    return dataclasses.replace(domain, split=_take(domain.split, chosen))


def _take(split: Split, users: list[int]) -> Split:
    return Split(
        train=tuple(split.train[u] for u in users),
        valid=tuple(split.valid[u] for u in users),
        test=tuple(split.test[u] for u in users),
    )


def export_for_recbole(domains: list[Domain], folder: Path) -> None:
    """Write each domain's sequences as RecBole atomic files, timestamps 1..n.

    A user's sequence is the test history followed by the test target, so
    RecBole's chronological leave-one-out split gives our validation and test
    targets. Ids are our internal indices.
    """
    for domain in domains:
        lines = ["user_id:token\titem_id:token\ttimestamp:float"]
        for user, (history, target) in enumerate(domain.split.test):
            for position, item in enumerate((*history, target), start=1):
                lines.append(f"u{user}\t{item}\t{position}")
        path = folder / domain.name / f"{domain.name}.inter"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")


def run_recbole_once(
    folder: Path, domain: str, seed: int, epochs: int, batch_size: int
) -> dict[str, Any]:
    """Run bench/recbole_sasrec.py on one exported domain; return its JSON line.

    Raises
    ------
    RuntimeError
        If the script fails; the message contains the end of its stderr.
    """
    folder = folder.resolve()
    command = [
        str(RECBOLE_PYTHON),
        str(ROOT / "bench" / "recbole_sasrec.py"),
        "--data-root",
        str(folder),
        "--domain",
        domain,
        "--checkpoints",
        str(folder / "checkpoints"),
        "--seed",
        str(seed),
        "--epochs",
        str(epochs),
        "--batch-size",
        str(batch_size),
    ]
    # RecBole writes log/ and log_tensorboard/ into its working directory.
    output = subprocess.run(command, capture_output=True, text=True, cwd=folder)
    if output.returncode != 0:
        raise RuntimeError(
            f"RecBole's SASRec failed on domain {domain} seed {seed} with exit "
            f"code {output.returncode}: {output.stderr[-2000:]}"
        )
    result: dict[str, Any] = json.loads(output.stdout.strip().splitlines()[-1])
    return result


def run_recbole(
    domains: list[Domain], seeds: tuple[int, ...], work: Path, epochs: int
) -> dict[str, Any]:
    """Train RecBole's SASRec per domain and seed in its own environment.

    Training uses RecBole's default batch size of 2048 sequences. Returns per
    domain the mean, standard deviation and per-seed values of each test metric
    at RecBole's best validation epoch, and the raw runs.
    """
    folder = work / "recbole"
    export_for_recbole(domains, folder)
    results: dict[str, Any] = {}
    for domain in domains:
        runs = []
        for seed in seeds:
            runs.append(run_recbole_once(folder, domain.name, seed, epochs, 2048))
            logger.info("recbole domain=%s seed=%d %s", domain.name, seed, runs[-1])
        entry: dict[str, Any] = {"runs": runs}
        for metric in METRICS:
            values = [run["test"][metric] for run in runs]
            entry[metric] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                "values": values,
            }
        results[domain.name] = entry
    return results


def run_study(
    domains: list[Domain], config: StudyConfig, jobs: int = 1, threads: int = 1
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run all seeds; return the summary and the validation curves of the first seed.

    With ``jobs > 1`` the seeds run in that many worker processes, each limited
    to ``threads`` threads. A seed's result does not depend on where it runs.
    """
    if jobs > 1 and len(config.seeds) > 1:
        with ProcessPoolExecutor(
            max_workers=min(jobs, len(config.seeds)),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(threads,),
        ) as pool:
            runs = list(
                pool.map(run_seed, repeat(domains), repeat(config), config.seeds)
            )
    else:
        runs = [run_seed(domains, config, seed) for seed in config.seeds]
    return summarize(runs), validation_curves(runs[0])


def _start_worker(threads: int) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True
    )
    logging.getLogger("client").setLevel(logging.WARNING)
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def run_sparse(
    domains: list[Domain], config: StudyConfig, names: Sequence[str] = ()
) -> dict[str, Any]:
    """Make each domain sparse in turn and compare its local-only and full model.

    ``names`` limits the turns to those domains; empty means every domain.
    """
    sparse_config = dataclasses.replace(
        config, variants=("local_only", "federated", "full")
    )
    results: dict[str, Any] = {}
    for index, domain in enumerate(domains):
        if names and domain.name not in names:
            continue
        sparse = subsample_users(domain, SPARSE_FRACTION, seed=index)
        changed = [sparse if i == index else d for i, d in enumerate(domains)]
        runs = [run_seed(changed, sparse_config, seed) for seed in config.seeds]
        summary = summarize(runs)
        results[domain.name] = {
            "users": len(sparse.split.train),
            "local_only": summary["variants"]["local_only"][domain.name],
            "full": summary["variants"]["full"][domain.name],
            "comparison": next(
                c
                for c in summary["comparisons"]
                if c["domain"] == domain.name
                and c["variant"] == "full"
                and c["baseline"] == "local_only"
            ),
        }
    return results


def markdown_table(dataset: str, summary: dict[str, Any], domains: list[Domain]) -> str:
    """Render each metric (mean ± std over seeds) per domain and variant, then the
    paired comparisons."""
    names = list(summary["variants"])
    lines = [
        f"| domain (users) | metric | {' | '.join(names)} |",
        "|---|---|" + "---|" * len(names),
    ]
    for domain in domains:
        for metric in METRICS:
            cells = []
            for name in names:
                entry = summary["variants"][name][domain.name][metric]
                cells.append(f"{entry['mean']:.4f} ± {entry['std']:.4f}")
            lines.append(
                f"| {domain.name} ({len(domain.split.test)}) | {metric} | {' | '.join(cells)} |"
            )
    means = summary["mean_over_domains"]
    lines.append(
        "| mean over domains | ndcg@10 | "
        + " | ".join(f"{means[name]['ndcg@10']:.4f}" for name in names)
        + " |"
    )
    lines.append("")
    lines.append(
        "| comparison | domain | NDCG@10 difference | SE | 95% bootstrap CI | relative | sign test p |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for c in summary["comparisons"]:
        # The relative difference is undefined when the baseline scores 0.
        relative = "-" if c["relative"] != c["relative"] else f"{c['relative']:+.1%}"
        lines.append(
            f"| {c['variant']} vs {c['baseline']} | {c['domain']} | "
            f"{c['difference']:+.4f} | {c['standard_error']:.4f} | "
            f"[{c['ci95_low']:+.4f}, {c['ci95_high']:+.4f}] | {relative} | "
            f"{c['sign_test_p']:.3f} |"
        )
    return f"### {dataset}\n\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True
    )
    logging.getLogger("client").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    started = time.monotonic()

    train = SCHEDULES[args.dataset]
    model = ModelConfig(
        scoring=args.scoring,
        n_subspaces=args.n_subspaces,
        n_centroids=args.n_centroids,
    )
    seeds = tuple(args.seeds)
    results_dir = args.results
    domains = load_domains(args.dataset, args.domains, args.work)
    if args.quick:
        train, model, seeds = (
            QUICK_TRAIN,
            dataclasses.replace(QUICK_MODEL, scoring=args.scoring),
            seeds[:1],
        )
        domains = [
            subsample_users(d, QUICK_USERS / len(d.split.train), 0) for d in domains
        ]
        results_dir = results_dir / "quick"
    if args.rounds:
        train = dataclasses.replace(train, rounds=args.rounds)
    if args.local_epochs:
        train = dataclasses.replace(train, local_epochs=args.local_epochs)
    prompt = PromptConfig(
        epochs=args.prompt_epochs,
        learning_rate=args.prompt_lr,
        finetune_global=tuple(args.finetune_global),
        finetune_learning_rate=args.finetune_lr,
    )
    config = StudyConfig(model, train, prompt, seeds, tuple(args.variants))
    results_dir.mkdir(parents=True, exist_ok=True)
    names = [d.name for d in domains]
    unknown = sorted(set(args.sparse or ()) - set(names))
    if unknown:
        raise SystemExit(
            f"--sparse: unknown domains {unknown}; name some of {names}, or none "
            "for all"
        )
    if args.sparse_only and args.sparse is None:
        raise SystemExit(
            "--sparse-only needs --sparse; add it with domain names, or alone "
            "for all domains"
        )
    entry: dict[str, Any] = {
        "quick": args.quick,
        "seeds": list(seeds),
        "model": dataclasses.asdict(model),
        "train": dataclasses.asdict(train),
        "prompt": dataclasses.asdict(prompt),
        "threads": args.threads,
        "domains": {
            d.name: {"users": len(d.split.test), "items": int(d.embeddings.shape[0])}
            for d in domains
        },
    }
    if args.sparse_only:
        entry["sparse"] = run_sparse(domains, config, args.sparse)
        entry["elapsed_s"] = round(time.monotonic() - started, 1)
        path = results_dir / f"quality-sparse-{args.dataset}.json"
        path.write_text(json.dumps(entry, indent=2) + "\n")
        print(f"wrote {path} after {entry['elapsed_s']:.0f} s")
        return 0

    summary, curves = run_study(domains, config, args.jobs, args.threads)
    entry.update(summary)
    entry["validation_ndcg@10_first_seed"] = curves
    if args.sparse is not None:
        entry["sparse"] = run_sparse(domains, config, args.sparse)
    if args.recbole_epochs > 0 and RECBOLE_PYTHON.exists():
        recbole_epochs = 2 if args.quick else args.recbole_epochs
        recbole = run_recbole(domains, seeds, args.work, recbole_epochs)
        summary["variants"]["recbole_sasrec"] = recbole
        summary["mean_over_domains"]["recbole_sasrec"] = {
            metric: float(np.mean([recbole[d.name][metric]["mean"] for d in domains]))
            for metric in METRICS
        }
    elif args.recbole_epochs > 0:
        logger.warning(
            "%s not found, so RecBole's SASRec is skipped; run "
            "`make bench-recbole-env` to build its environment",
            RECBOLE_PYTHON,
        )
    entry["elapsed_s"] = round(time.monotonic() - started, 1)

    path = results_dir / "quality.json"
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing[args.dataset] = entry
    path.write_text(json.dumps(existing, indent=2) + "\n")
    (results_dir / f"quality-{args.dataset}.md").write_text(
        markdown_table(args.dataset, summary, domains)
    )
    (results_dir / f"quality-{args.dataset}-ndcg.png").write_bytes(
        plot_ndcg(args.dataset, summary)
    )
    (results_dir / f"quality-{args.dataset}-validation.png").write_bytes(
        plot_validation(args.dataset, curves)
    )
    print(markdown_table(args.dataset, summary, domains))
    print(
        f"wrote {path} and the plots in {results_dir} after {entry['elapsed_s']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
