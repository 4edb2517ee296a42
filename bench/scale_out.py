"""Time one domain's training round on 1 process and on N torchrun-style ranks.

The domain is synthetic (random sequences and item codes), because only the
time matters. Each rank is its own process with one torch thread, joined
through a file store, and gloo runs on the loopback interface. Rank 0 times
``train_round`` exactly as a scaled-out client does, weight broadcast included.
Writes ``bench/results/scale_out.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.speed import time_epochs
from client.distributed import join_ranks, lead_build, leave_ranks, serve_rank
from client.session import DomainModel
from client.split import Split
from common.config import (
    ClientConfig,
    ModelConfig,
    PromptConfig,
    TLSConfig,
    TrainConfig,
)

ROOT = Path(__file__).resolve().parent.parent
MODEL = ModelConfig()
PROMPT = PromptConfig(epochs=0, domain_prompt=False, user_prompt=False)
SEED = 0


def make_split(users: int, length: int, items: int) -> Split:
    """Build ``users`` random sequences of ``length`` items; the same on every call."""
    rng = random.Random(SEED)
    sequences = [
        tuple(rng.randint(1, items) for _ in range(length)) for _ in range(users)
    ]
    return Split(
        train=tuple(seq[:-2] for seq in sequences),
        valid=tuple((seq[:-2], seq[-2]) for seq in sequences),
        test=tuple((seq[:-1], seq[-1]) for seq in sequences),
    )


def make_item_codes(items: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(SEED)
    shape = (items + 1, MODEL.n_subspaces)
    codes = torch.randint(0, MODEL.n_centroids, shape, generator=generator)
    codes[0] = 0
    return codes


def run_rank(args: argparse.Namespace) -> int:
    """Run one rank of a timed group; rank 0 writes its times to the folder."""
    torch.set_num_threads(1)
    split = make_split(args.users, args.length, args.items)
    train = TrainConfig(local_epochs=1, batch_size=args.batch_size)
    config = ClientConfig(
        domain="bench", data_dir=args.folder, tls=TLSConfig(insecure=True)
    )
    url = f"file://{args.folder / 'store'}?rank={args.rank}&world_size={args.world}"
    try:
        group = join_ranks(config, split, url)
        if args.rank > 0:
            serve_rank(group, split)
            return 0
        codes = make_item_codes(args.items)
        model = lead_build(group, MODEL, train, split, codes, SEED, PROMPT)
        seconds = time_epochs(model, args.rounds)
        group.stop("the benchmark finished")
    finally:
        leave_ranks()
    (args.folder / "seconds.json").write_text(json.dumps(seconds))
    return 0


def time_group(args: argparse.Namespace, world: int) -> list[float]:
    """Start ``world`` rank processes and return rank 0's round times."""
    if world == 1:
        torch.set_num_threads(1)
        split = make_split(args.users, args.length, args.items)
        train = TrainConfig(local_epochs=1, batch_size=args.batch_size)
        codes = make_item_codes(args.items)
        model = DomainModel(MODEL, train, split, codes, SEED, PROMPT)
        return time_epochs(model, args.rounds)

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        environment = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "GLOO_SOCKET_IFNAME": "lo",
        }
        shared = [
            "--users", str(args.users), "--length", str(args.length),
            "--items", str(args.items), "--batch-size", str(args.batch_size),
            "--rounds", str(args.rounds), "--folder", str(folder),
            "--world", str(world),
        ]  # fmt: skip
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "bench.scale_out", "--rank", str(rank)] + shared,
                cwd=ROOT,
                env=environment,
            )
            for rank in range(world)
        ]
        for process in processes:
            if process.wait() != 0:
                raise RuntimeError(f"a rank exited with code {process.returncode}")
        seconds: list[float] = json.loads((folder / "seconds.json").read_text())
        return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--users", type=int, default=2000, help="number of users (2000)"
    )
    parser.add_argument("--length", type=int, default=40, help="items per user (40)")
    parser.add_argument(
        "--items", type=int, default=2000, help="number of items (2000)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="sequences per batch (64)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="number of timed rounds (3)"
    )
    parser.add_argument(
        "--ranks",
        type=int,
        nargs="+",
        default=[1, 2],
        help="numbers of ranks to time (1 2)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "scale_out.json"
    )
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--world", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank is not None:
        return run_rank(args)

    load_before = os.getloadavg()
    results: list[dict[str, Any]] = []
    for world in args.ranks:
        seconds = time_group(args, world)
        results.append(
            {"ranks": world, "seconds": seconds, "median": statistics.median(seconds)}
        )
        print(f"ranks={world} median round {results[-1]['median']:.2f} s {seconds}")
    report = {
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "users": args.users,
        "length": args.length,
        "items": args.items,
        "batch_size": args.batch_size,
        "model": "ModelConfig() defaults, dropout included",
        "threads_per_rank": 1,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
