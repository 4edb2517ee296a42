"""Secure-aggregation benchmark: `make bench-secagg` or `python -m bench.secagg`.

One run on this machine measures five things. They are the client mask rate
against the raw AES-128-CTR keystream, a full round with secure aggregation
against the same round in the clear, the coordinator's unmasking for 500
clients, and the bytes a client uploads. When bench/.venv-flwr exists, it also
times Flower's SecAgg+ mask step. The run writes bench/results/secagg.json and
the "Secure aggregation" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cryptography
import grpc
import numpy as np
from cryptography.hazmat.backends.openssl import backend

from bench.secagg_mask import measure_client_masking, measure_mask_rate
from bench.secagg_report import write_section
from bench.secagg_round import run_round_benchmark
from bench.secagg_unmask import measure_unmask

logger = logging.getLogger("bench.secagg")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "secagg.json"
DOCS = ROOT / "docs" / "benchmarks.md"
FLOWER_PYTHON = ROOT / "bench" / ".venv-flwr" / "bin" / "python"
COMMAND = "make bench-secagg"

# Vector sizes and client counts of the headline figures.
MASK_WORDS = 4_000_000
MASKS = 8
REAL_CLIENTS = 3
SIMULATED_CLIENTS = 10
UPDATE_VALUES = 4_000_000
UNMASK_CLIENTS = 500
UNMASK_ENTRIES = 100_000
UNMASK_DROPPED = 50
# SecAgg+ neighbours for 500 clients: each neighbourhood then has 41 share
# holders, so the active-mode threshold is 28.
UNMASK_NEIGHBOURS = 40
UNMASK_MODE = "active"
FLOWER_TIMEOUT_S = 300

TARGETS = {
    "mask_over_keystream": ">= 0.7",
    "secure_over_plain_round_ratio": "<= 1.10",
    "unmask_500x100k_10pct_s": "< 3",
    "upload_bytes_over_float32": "<= 1.05",
}


def machine() -> dict[str, Any]:
    """Describe the CPU and the library versions that the figures depend on."""
    model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cryptography": cryptography.__version__,
        "openssl": backend.openssl_version_text(),
        "grpcio": grpc.__version__,
    }


def run_flower(length: int, peers: int, repeats: int) -> dict[str, Any]:
    """Time Flower's mask step in its own environment, or return why it was skipped."""
    if not FLOWER_PYTHON.exists():
        return {"skipped": f"{FLOWER_PYTHON.relative_to(ROOT)} does not exist"}
    command = [
        str(FLOWER_PYTHON),
        "-m",
        "bench.secagg_flower",
        "--length",
        str(length),
        "--peers",
        str(peers),
        "--repeats",
        str(repeats),
    ]
    try:
        completed = subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=FLOWER_TIMEOUT_S,
            check=True,
        )
    except (subprocess.SubprocessError, OSError) as error:
        return {"skipped": f"the Flower mask step failed: {error}"}
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every part and return the results as one JSON-ready dict."""
    started = time.perf_counter()
    results: dict[str, Any] = {
        "command": COMMAND,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_start": list(os.getloadavg()),
    }
    peers = args.real_clients + args.simulated_clients - 1
    length = args.update_values + 1

    logger.info("mask rate: %d words, %d masks", args.mask_words, MASKS)
    mask = measure_mask_rate(args.mask_words, MASKS, args.repeats)
    client = measure_client_masking(length, peers, args.repeats)
    results["mask"] = {**dataclasses.asdict(mask), "ratio": mask.ratio}
    results["client_masking"] = dataclasses.asdict(client)

    logger.info("rounds: %d values, %d clients", length, peers + 1)
    with tempfile.TemporaryDirectory(prefix="bench-secagg-") as work_dir:
        rounds = run_round_benchmark(
            Path(work_dir),
            length,
            args.real_clients,
            args.simulated_clients,
            args.round_repeats,
        )
    results["round"] = {
        **dataclasses.asdict(rounds),
        "ratio": rounds.ratio,
        "cpu_ratio": rounds.cpu_ratio,
    }
    results["upload"] = upload_figures(rounds.request_bytes, length)

    logger.info("unmask: %d clients, %d entries", UNMASK_CLIENTS, args.unmask_entries)
    unmask = {}
    for name, neighbours, repeats in (
        ("secagg_plus", UNMASK_NEIGHBOURS, args.repeats),
        ("complete_graph", 0, 1),
    ):
        if name == "complete_graph" and args.skip_complete_graph:
            continue
        measured = measure_unmask(
            UNMASK_CLIENTS,
            args.unmask_entries,
            UNMASK_DROPPED,
            neighbours,
            UNMASK_MODE,
            repeats,
        )
        unmask[name] = {**dataclasses.asdict(measured), "best_s": measured.best_s}
    results["unmask"] = unmask

    logger.info("Flower SecAgg+ mask step")
    flower = run_flower(length, peers, args.repeats)
    if "seconds" in flower:
        fedcdr_s = client.encode_s + client.mask_s
        flower["fedcdr_encode_and_mask_s"] = fedcdr_s
        flower["flower_over_fedcdr"] = min(flower["seconds"]) / fedcdr_s
    results["flower"] = flower

    results["figures"] = figures(results)
    results["targets"] = TARGETS
    results["load_average_end"] = list(os.getloadavg())
    results["elapsed_s"] = time.perf_counter() - started
    return results


def upload_figures(request_bytes: dict[str, dict[str, int]], length: int) -> dict:
    """Compare one client's request bytes in each round with its float32 update."""
    float32_bytes = 4 * length
    secure = request_bytes.get("secure", {})
    plain = request_bytes.get("plain", {})
    return {
        "float32_bytes": float32_bytes,
        "secure_request_bytes": secure,
        "plain_request_bytes": plain,
        "secure_over_float32": sum(secure.values()) / float32_bytes,
        "secure_upload_rpc_over_float32": secure.get("Upload", 0) / float32_bytes,
        "plain_over_float32": sum(plain.values()) / float32_bytes,
    }


def figures(results: dict[str, Any]) -> dict[str, Any]:
    """Collect the headline figures from the detailed results."""
    unmask = results["unmask"]
    complete = unmask.get("complete_graph")
    return {
        "mask_words_per_s": results["mask"]["mask_words_per_s"],
        "aes_ctr_keystream_words_per_s": results["mask"][
            "aes_ctr_keystream_words_per_s"
        ],
        "mask_over_keystream": results["mask"]["ratio"],
        "secure_over_plain_round_ratio": results["round"]["ratio"],
        "secure_over_plain_round_cpu_ratio": results["round"]["cpu_ratio"],
        "plain_round_median_s": statistics.median(results["round"]["plain_s"]),
        "secure_round_median_s": statistics.median(results["round"]["secure_s"]),
        "unmask_500x100k_10pct_s": unmask["secagg_plus"]["best_s"],
        "unmask_500x100k_10pct_wall_s": min(unmask["secagg_plus"]["wall_seconds"]),
        "unmask_500x100k_10pct_complete_graph_s": (
            complete["best_s"] if complete else None
        ),
        "upload_bytes_over_float32": results["upload"]["secure_over_float32"],
        "flower_mask_step_over_fedcdr": results["flower"].get("flower_over_fedcdr"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.secagg", description=__doc__)
    parser.add_argument("--mask-words", type=int, default=MASK_WORDS)
    parser.add_argument("--update-values", type=int, default=UPDATE_VALUES)
    parser.add_argument("--unmask-entries", type=int, default=UNMASK_ENTRIES)
    parser.add_argument("--real-clients", type=int, default=REAL_CLIENTS)
    parser.add_argument("--simulated-clients", type=int, default=SIMULATED_CLIENTS)
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed passes per rate and per unmask; the shortest counts",
    )
    parser.add_argument(
        "--round-repeats",
        type=int,
        default=5,
        help="measured rounds of each kind after one warm-up; the median counts",
    )
    parser.add_argument("--skip-complete-graph", action="store_true")
    parser.add_argument(
        "--no-write",
        action="store_true",
        help="print the results instead of writing the JSON file and the docs",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True
    )
    # The coordinator's INFO lines feed the stage clock but are not printed.
    for handler in logging.getLogger().handlers:
        handler.addFilter(
            lambda record: record.name.startswith("bench")
            or record.levelno >= logging.WARNING
        )

    results = run(args)
    if args.no_write:
        json.dump(results, sys.stdout, indent=2)
        return 0
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    write_section(DOCS, results)
    logger.info("wrote %s and %s in %.0f s", RESULTS, DOCS, results["elapsed_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
