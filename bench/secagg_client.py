"""Benchmark client process: domains that upload a fixed synthetic update per task.

Each domain runs in its own thread with its own channel and the real client
code (CoordinatorClient, PlainUpload, SecureUpload). It has no data and does no
training, because every task gets the same synthetic vector, so a round
measures the aggregation alone. After each task a domain prints one JSON line
with its time and the bytes of every request it sent. bench.secagg_round starts
this process.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from client.aggregation import PlainUpload, SecureUpload
from client.connection import CoordinatorClient, open_channel
from client.secagg import load_identity
from common.config import ClientConfig, TLSConfig
from common.pb import federation_pb2 as pb
from common.runconfig import PROTOCOL_VERSION

logger = logging.getLogger("bench.secagg_client")

# gRPC frames every message with a 1-byte flag and a 4-byte length.
GRPC_FRAME_BYTES = 5
# Fraction of the clipping bound that the synthetic deltas span, so that no
# value is clipped and the secure sum stays comparable to the plain one.
DELTA_SPAN = 0.9


class RequestBytes(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):
    """Count the serialized bytes of every request message, by RPC method."""

    def __init__(self) -> None:
        self.bytes: dict[str, int] = defaultdict(int)

    def reset(self) -> None:
        self.bytes = defaultdict(int)

    def _count(self, method: str, message: Any) -> None:
        name = method.rsplit("/", 1)[-1]
        self.bytes[name] += message.ByteSize() + GRPC_FRAME_BYTES

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        self._count(details.method, request)
        return continuation(details, request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, requests: Iterator[Any]
    ) -> Any:
        def counted() -> Iterator[Any]:
            for message in requests:
                self._count(details.method, message)
                yield message

        return continuation(details, counted())


def synthetic_update(length: int, weight: int, bound: float, seed: int) -> np.ndarray:
    """Return a training upload: ``length - 1`` weighted deltas, then the weight."""
    rng = np.random.default_rng(seed)
    vector = np.empty(length, dtype=np.float64)
    span = DELTA_SPAN * bound
    vector[:-1] = weight * rng.uniform(-span, span, length - 1)
    vector[-1] = weight
    return vector


def serve_domain(
    domain: str, weight: int, args: argparse.Namespace, output: threading.Lock
) -> None:
    """Join, then upload the synthetic vector for each task until DONE or ABORT."""
    folder = args.certs / "domains" / domain
    tls_config = TLSConfig(
        ca=folder / "ca.pem", cert=folder / "cert.pem", key=folder / "key.pem"
    )
    config = ClientConfig(
        domain=domain, data_dir=Path("."), coordinator=args.address, tls=tls_config
    )
    counter = RequestBytes()
    channel = grpc.intercept_channel(open_channel(config), counter)
    coordinator = CoordinatorClient(config, channel)
    identity = load_identity(tls_config)
    stats = pb.DomainStats(n_users=weight, n_items=1, n_interactions=weight)
    joined = coordinator.join(stats, PROTOCOL_VERSION)
    seed = args.seed + weight
    vector = synthetic_update(args.length, weight, args.bound, seed)

    while True:
        task = coordinator.next_task()
        if task.kind == pb.TASK_KIND_WAIT:
            continue
        if task.kind in (pb.TASK_KIND_DONE, pb.TASK_KIND_ABORT):
            return
        counter.reset()
        start = time.perf_counter()
        secure = task.HasField("secagg")
        if secure:
            upload = SecureUpload(coordinator, task, joined.secagg, identity, seed)
            upload.start()
            upload.submit(vector)
        else:
            PlainUpload(coordinator, task).submit(vector)
        record = {
            "domain": domain,
            "task_id": task.task_id,
            "secure": secure,
            "client_s": time.perf_counter() - start,
            "request_bytes": dict(counter.bytes),
        }
        with output:
            print(json.dumps(record), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.secagg_client")
    parser.add_argument("--address", required=True, help="coordinator host:port")
    parser.add_argument("--certs", type=Path, required=True, help="certificate set")
    parser.add_argument(
        "--domains",
        required=True,
        help="comma-separated name:weight pairs, one thread each",
    )
    parser.add_argument("--length", type=int, required=True, help="vector length")
    parser.add_argument("--bound", type=float, required=True, help="clipping bound")
    parser.add_argument("--seed", type=int, default=0, help="seed of the updates")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(name)s: %(message)s", force=True
    )

    output = threading.Lock()
    failures: list[str] = []

    def run(domain: str, weight: int) -> None:
        try:
            serve_domain(domain, weight, args, output)
        except Exception as error:
            logger.exception("domain=%s failed", domain)
            failures.append(f"{domain}: {error}")

    threads = []
    for entry in args.domains.split(","):
        domain, weight = entry.split(":")
        thread = threading.Thread(target=run, args=(domain, int(weight)), name=domain)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
