"""Measure the wall time of one training epoch of our client on one thread.

The epoch covers every (history prefix, next item) pair of the largest domain's
training split once: the model computes the loss at every position, so one pass
per user covers all of that user's pairs. Writes training.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import torch

from bench.quality import (
    RECBOLE_PYTHON,
    ROOT,
    export_for_recbole,
    load_domains,
    run_recbole_once,
)
from client.itemcodes import train_local_codebook
from client.session import DomainModel, item_code_table
from client.split import Split
from common.config import ModelConfig, TrainConfig

logger = logging.getLogger("bench.speed")


def training_pairs(split: Split, max_seq_len: int) -> int:
    """Count the (prefix, next item) pairs one epoch trains on.

    A sequence of n items gives n - 1 pairs, of which the last ``max_seq_len``
    fit into one input row.
    """
    return sum(min(len(s) - 1, max_seq_len) for s in split.train if len(s) >= 2)


def time_epochs(state: DomainModel, epochs: int) -> list[float]:
    """Train ``epochs`` single epochs and return the wall time of each, in seconds."""
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        state.train_round()
        times.append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("ml-100k", "ml-1m"), default="ml-1m")
    parser.add_argument("--domains", type=int, default=3)
    parser.add_argument(
        "--epochs", type=int, default=3, help="epochs timed; the median is reported"
    )
    parser.add_argument("--batch-size", type=int, default=TrainConfig().batch_size)
    parser.add_argument(
        "--recbole-epochs",
        type=int,
        default=1,
        help="SASRec epochs timed (0 skips RecBole)",
    )
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True
    )
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)

    domains = load_domains(args.dataset, args.domains, args.work)
    largest = max(
        domains, key=lambda d: training_pairs(d.split, ModelConfig().max_seq_len)
    )
    model = ModelConfig()
    train = TrainConfig(local_epochs=1, batch_size=args.batch_size)
    centroids = train_local_codebook(
        largest.embeddings, model.n_subspaces, model.n_centroids, 2, 0
    )
    state = DomainModel(
        model, train, largest.split, item_code_table(largest.embeddings, centroids), 0
    )
    times = time_epochs(state, args.epochs)
    epoch_s = sorted(times)[len(times) // 2]
    pairs = training_pairs(largest.split, model.max_seq_len)

    result: dict[str, Any] = {
        "dataset": args.dataset,
        "domain": largest.name,
        "users": len(largest.split.train),
        "pairs": pairs,
        "threads": 1,
        "model": dataclasses.asdict(model),
        "batch_size": args.batch_size,
        "our_epoch_s": round(epoch_s, 3),
        "our_epoch_s_all": [round(t, 3) for t in times],
        "our_pairs_per_s": round(pairs / epoch_s, 1),
        "recbole_sasrec_epoch_s": None,
        "recbole_sasrec_pairs_per_s": None,
        "speed_ratio": None,
    }
    if args.recbole_epochs > 0 and RECBOLE_PYTHON.exists():
        folder = args.work / "recbole-speed"
        export_for_recbole([largest], folder)
        recbole = run_recbole_once(
            folder, largest.name, 0, args.recbole_epochs, args.batch_size
        )
        result["recbole_sasrec_rows"] = recbole["rows"]
        result["recbole_sasrec_epoch_s"] = round(recbole["epoch_s"], 3)
        result["recbole_sasrec_pairs_per_s"] = round(recbole["rows_per_s"], 1)
        result["speed_ratio"] = round(recbole["epoch_s"] / epoch_s, 2)
    elif args.recbole_epochs > 0:
        logger.warning(
            "%s not found, so RecBole's side is left empty; run "
            "`make bench-recbole-env` to build its environment",
            RECBOLE_PYTHON,
        )
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / "training.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
