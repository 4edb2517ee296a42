"""Measure recommendation serving on ml-1m's largest domain: latency and throughput.

The domain with the most users gets a model of the default shape, trained only
briefly (one epoch, one prompt-tuning epoch), because ranking speed does not
depend on its quality. It is saved as `fedcdr-client run` saves it. Then:

1. `fedcdr-client serve` runs as its own process with mutual TLS on loopback,
   and sequential Recommend calls for random users are timed after a warm-up;
2. the ranking alone (``Recommender.for_user``) is timed in this process;
3. every user's top 10 is written to Parquet and CSV, timed end to end.

Everything runs on one thread. Writes bench/results/serve.json and the
"Recommendation serving" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import grpc
import numpy as np
import torch

from bench.docs_section import replace_section
from client.data import DomainData, load_domain, split_leave_one_out
from client.export import write_recommendations
from client.itemcodes import embed_items, train_local_codebook
from client.movielens import build_movielens_domains
from client.recommend import Recommender, open_recommender
from client.session import ITEM_IDS_KEY, MODEL_FILE, DomainModel, item_code_table
from common import tls
from common.certs import create_certificates
from common.config import ModelConfig, PromptConfig, TrainConfig
from common.pb import inference_pb2 as pb
from common.pb import inference_pb2_grpc as pb_grpc

logger = logging.getLogger("bench.serve")

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOCS = ROOT / "docs" / "benchmarks.md"
HEADING = "## Recommendation serving"
DATASET = "ml-1m"
N_DOMAINS = 3
K = 10
# Requests before the timed ones, so that lazy initialization is not timed.
WARM_UP = 20


def largest_domain(work: Path) -> DomainData:
    """Build the ml-1m genre domains once and load the one with the most users."""
    folder = work / "data" / f"{DATASET}-{N_DOMAINS}"
    if not folder.is_dir():
        build_movielens_domains(DATASET, N_DOMAINS, folder)
    domains = [load_domain(p) for p in sorted(folder.iterdir()) if p.is_dir()]
    return max(domains, key=lambda d: d.n_users)


def train_briefly(data: DomainData, work_dir: Path) -> float:
    """Train and save a default-shape model in ``work_dir``; return the seconds."""
    started = time.perf_counter()
    embeddings = embed_items(data.item_texts, work_dir / "cache")
    model = ModelConfig()
    centroids = train_local_codebook(
        embeddings, model.n_subspaces, model.n_centroids, 2, 0
    )
    state = DomainModel(
        model,
        TrainConfig(),
        split_leave_one_out(data),
        item_code_table(embeddings, centroids),
        0,
        PromptConfig(epochs=1),
    )
    state.train_round()
    state.tune_prompts(1)
    # Rank through the prompt branches, the slowest path, whatever tuning chose.
    state.model.set_prompt_active(True)
    metadata = {
        "domain": data.name,
        "run_id": "bench-serve",
        ITEM_IDS_KEY: json.dumps(list(data.item_ids)),
    }
    extra = {"codebook.centroids": torch.from_numpy(np.asarray(centroids))}
    state.keep_if_best(state.evaluate(1), work_dir / MODEL_FILE, metadata, extra)
    return time.perf_counter() - started


def write_config(work_dir: Path, data_dir: Path, domain: str) -> Path:
    """Write the client.toml of the service, with a fresh certificate set."""
    certs = create_certificates(work_dir / "certs", ["bench"], overwrite=True)
    folder = certs.coordinator_dir
    config = work_dir / "client.toml"
    # The benchmark never contacts a coordinator, so [tls] is off; [serve.tls] is on.
    config.write_text(
        f'domain = "{domain}"\ndata_dir = "{data_dir}"\nwork_dir = "{work_dir}"\n'
        "threads = 1\n\n[tls]\ninsecure = true\n\n[serve]\n"
        'listen = "127.0.0.1:0"\n'
        f'tls = {{ ca = "{folder / "ca.pem"}", cert = "{folder / "cert.pem"}", '
        f'key = "{folder / "key.pem"}" }}\n'
    )
    return config


def time_requests(
    config: Path,
    caller: Path,
    recommender: Recommender,
    users: list[str],
    requests: int,
) -> dict[str, Any]:
    """Start `fedcdr-client serve` and time calls to it and in-process rankings.

    Each random user is ranked once through the service and once in process,
    alternately, so a change of machine load affects both series alike.
    """
    port_file = config.parent / "address"
    port_file.unlink(missing_ok=True)
    started = time.perf_counter()
    process = subprocess.Popen(
        [BIN / "fedcdr-client", "serve", "--config", config, "--port-file", port_file],
        stderr=subprocess.DEVNULL,
    )
    try:
        while not (port_file.exists() and port_file.read_text().strip()):
            if process.poll() is not None:
                raise SystemExit(
                    f"fedcdr-client serve exited with {process.returncode}"
                )
            time.sleep(0.1)
        start_s = time.perf_counter() - started
        credentials = tls.channel_credentials(
            caller / "ca.pem", caller / "cert.pem", caller / "key.pem"
        )
        address = port_file.read_text().strip()
        with grpc.secure_channel(address, credentials) as channel:
            stub = pb_grpc.RecommenderStub(channel)
            service_times, local_times = [], []
            chosen = random.Random(0).choices(users, k=requests + WARM_UP)
            for index, user in enumerate(chosen):
                begin = time.perf_counter()
                stub.Recommend(pb.RecommendRequest(user_id=user, k=K), timeout=60)
                middle = time.perf_counter()
                recommender.for_user(user, K)
                end = time.perf_counter()
                if index >= WARM_UP:
                    service_times.append(middle - begin)
                    local_times.append(end - middle)
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return {
        "service_start_s": round(start_s, 2),
        "service_exit_code_after_sigterm": exit_code,
        "service": _summary(service_times),
        "rank_only": _summary(local_times),
    }


def _summary(times: list[float]) -> dict[str, Any]:
    milliseconds = sorted(t * 1000 for t in times)
    return {
        "requests": len(times),
        "median_ms": round(statistics.median(milliseconds), 3),
        "p99_ms": round(statistics.quantiles(milliseconds, n=100)[98], 3),
        "max_ms": round(milliseconds[-1], 3),
    }


def time_exports(recommender: Recommender, folder: Path) -> dict[str, Any]:
    """Time the export of every user's top K to Parquet and to CSV."""
    n_users = len(recommender.histories)
    exports = {}
    for suffix in ("parquet", "csv"):
        out = folder / f"all.{suffix}"
        begin = time.perf_counter()
        rows = write_recommendations(
            recommender.all_users(K, batch_size=256), out, n_users, progress=False
        )
        seconds = time.perf_counter() - begin
        exports[suffix] = {
            "seconds": round(seconds, 2),
            "users_per_s": round(n_users / seconds, 1),
            "rows": rows,
            "bytes": out.stat().st_size,
        }
    return exports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="timed calls")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--retrain", action="store_true", help="train again even if a model is saved"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True
    )
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    load_before = os.getloadavg()[0]
    began = time.perf_counter()

    data = largest_domain(args.work)
    work_dir = args.work / "serve" / data.name
    data_dir = args.work / "data" / f"{DATASET}-{N_DOMAINS}" / data.name
    train_s = None
    if args.retrain or not (work_dir / MODEL_FILE).exists():
        train_s = round(train_briefly(data, work_dir), 1)
    config = write_config(work_dir, data_dir, data.name)
    caller = work_dir / "certs" / "domains" / "bench"
    users = list(data.user_ids)

    started = time.perf_counter()
    recommender = open_recommender(work_dir / MODEL_FILE, data_dir, work_dir / "cache")
    load_s = time.perf_counter() - started
    timings = time_requests(config, caller, recommender, users, args.requests)

    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset": DATASET,
        "domain": data.name,
        "users": data.n_users,
        "items": data.n_items,
        "k": K,
        "threads": 1,
        "model": ModelConfig().__dict__,
        "training": "1 epoch and 1 prompt-tuning epoch; quality not measured",
        "train_s": train_s,
        "load_s": round(load_s, 2),
        **timings,
        "export": time_exports(recommender, work_dir),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "grpcio": grpc.__version__,
            "niceness": os.nice(0),
            "load_average_start": round(load_before, 1),
            "load_average_end": round(os.getloadavg()[0], 1),
        },
        "wall_s": round(time.perf_counter() - began, 1),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "serve.json").write_text(json.dumps(result, indent=2) + "\n")
    replace_section(DOCS, HEADING, render(result))
    print(json.dumps(result, indent=2))
    return 0


def render(result: dict[str, Any]) -> str:
    """Format the docs section from the results of ``main``."""
    service, rank = result["service"], result["rank_only"]
    machine = result["machine"]
    export = result["export"]
    trained = (
        f"Training took {result['train_s']} s and is not part of the figures."
        if result["train_s"] is not None
        else "The model was saved by an earlier run of this benchmark (`--retrain` "
        "trains it again)."
    )
    return (
        f"{HEADING}\n\n"
        f"Measured by `make bench-serve` (`python -m bench.serve`) on {result['date']}, "
        f"on {machine['cpus']} cores ({machine['processor']}), one torch thread, "
        f"Python {machine['python']}, torch {machine['torch']}, grpcio "
        f"{machine['grpcio']}. The raw results are in bench/results/serve.json. "
        f"The process ran at niceness {machine['niceness']}, and the one-minute load "
        f"average was {machine['load_average_start']} at the start and "
        f"{machine['load_average_end']} at the end, so other work shared the cores "
        "and the times are longer and noisier than on an idle machine.\n\n"
        f"The domain is {result['dataset']}'s largest by users, {result['domain']} "
        f"({result['users']:,} users, {result['items']:,} items), with a model of the "
        "default shape (hidden size 64, 2 layers, 32 x 256 codes, domain and user "
        "prompt active). The model was trained only briefly (one epoch and one "
        "prompt-tuning epoch), because ranking speed does not depend on quality. "
        f"{trained} "
        f"Each request asks for the top {result['k']} of one random user, with seen "
        "items left out. Each user is ranked through the service and then in "
        "process, alternately, so that a change of load affects both series alike; "
        f"the first {WARM_UP} users are not timed.\n\n"
        "| figure | median | p99 |\n"
        "|---|---:|---:|\n"
        f"| one request through `fedcdr-client serve` (mutual TLS, loopback, "
        f"{service['requests']} sequential calls) | {service['median_ms']:.2f} ms | "
        f"{service['p99_ms']:.2f} ms |\n"
        f"| the ranking alone (`Recommender.for_user`, in process) | "
        f"{rank['median_ms']:.2f} ms | {rank['p99_ms']:.2f} ms |\n\n"
        "| batch export of every user (`recommend --all`) | seconds | users per second "
        "| file size |\n"
        "|---|---:|---:|---:|\n"
        f"| Parquet | {export['parquet']['seconds']:.1f} | "
        f"{export['parquet']['users_per_s']:,.0f} | "
        f"{export['parquet']['bytes'] / 1e6:.2f} MB |\n"
        f"| CSV | {export['csv']['seconds']:.1f} | {export['csv']['users_per_s']:,.0f} "
        f"| {export['csv']['bytes'] / 1e6:.2f} MB |\n\n"
        f"Loading the model, the data and the catalogue took {result['load_s']:.1f} s "
        f"in process, and the service accepted requests {result['service_start_s']:.1f} s "
        "after its process started (Python and torch imports included). Both used the "
        "embedding cache of the model's folder, so no text was encoded. The service "
        f"exited with code {result['service_exit_code_after_sigterm']} after SIGTERM. "
        "The export scores 256 users per batch, so its memory for scores stays at "
        "256 x items floats whatever the number of users.\n"
    )


if __name__ == "__main__":
    sys.exit(main())
