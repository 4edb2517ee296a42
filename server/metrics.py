"""Prometheus metrics of the coordinator and the HTTP endpoint that exports them.

Every coordinator keeps its metrics in its own registry, so tests and several
coordinators in one process do not mix them. The endpoint serves only when
``metrics_listen`` is set.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import start_http_server

from common.config import ConfigError

logger = logging.getLogger(__name__)

# Stage durations range from milliseconds (a stage every client already
# acted in) to the round deadline, which defaults to 900 s.
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 1800)


class CoordinatorMetrics:
    """The counters, gauges and histograms a coordinator updates.

    Parameters
    ----------
    registry
        Registry to register them in; a new one when None.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        registry = self.registry
        self.rounds_completed = Counter(
            "fedcdr_rounds_completed",
            "Training rounds committed since this coordinator started",
            registry=registry,
        )
        self.round = Gauge(
            "fedcdr_round", "Number of the last committed round", registry=registry
        )
        self.stage_seconds = Histogram(
            "fedcdr_stage_duration_seconds",
            "Duration of each task stage, from its start to its close",
            ["stage"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.participants = Gauge(
            "fedcdr_task_participants",
            "Domains invited to the last finished task",
            registry=registry,
        )
        self.completed = Gauge(
            "fedcdr_task_completed_domains",
            "Domains whose input the last finished task contains",
            registry=registry,
        )
        self.dropouts = Counter(
            "fedcdr_dropouts",
            "Domains dropped from a task (late, gone or cut out of an aggregation)",
            registry=registry,
        )
        self.received_bytes = Counter(
            "fedcdr_received_bytes",
            "Payload bytes received in accepted uploads",
            ["rpc"],
            registry=registry,
        )
        self.sent_bytes = Counter(
            "fedcdr_sent_bytes",
            "Payload bytes sent in downloads",
            ["rpc"],
            registry=registry,
        )
        self.aggregation_seconds = Histogram(
            "fedcdr_aggregation_seconds",
            "Time to compute a task's aggregate after its last stage, "
            "including mask removal",
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.privacy_epsilon = Gauge(
            "fedcdr_privacy_epsilon",
            "User-level epsilon a domain's DP-SGD spent after the last committed "
            "round, at the run's dp.delta",
            ["domain"],
            registry=registry,
        )
        self.privacy_aggregate_epsilon = Gauge(
            "fedcdr_privacy_aggregate_epsilon",
            "Domain-level epsilon of the aggregate after the last committed round, "
            "at the run's dp.aggregate_delta",
            registry=registry,
        )
        self.rejected = Counter(
            "fedcdr_rejected_requests",
            "Requests answered with an error status, by status code",
            ["code"],
            registry=registry,
        )

    def record_task(self, participants: int, completed: int) -> None:
        """Record how many domains a finished task invited and completed."""
        self.participants.set(participants)
        self.completed.set(completed)
        if participants > completed:
            self.dropouts.inc(participants - completed)

    def record_privacy(self, record: Mapping[str, Any]) -> None:
        """Record the epsilon of a committed round's privacy record."""
        for domain, value in record["user_epsilon"].items():
            self.privacy_epsilon.labels(domain).set(value)
        if "aggregate_epsilon" in record:
            self.privacy_aggregate_epsilon.set(record["aggregate_epsilon"])

    def byte_totals(self) -> tuple[int, int]:
        """Return the payload bytes received and sent so far, over all RPCs."""
        return _counter_total(self.received_bytes), _counter_total(self.sent_bytes)

    def record_round(self, round_index: int) -> None:
        """Record a committed training round."""
        self.rounds_completed.inc()
        self.round.set(round_index)


def _counter_total(counter: Counter) -> int:
    """Return the sum of a labelled counter over all its labels."""
    return int(
        sum(
            sample.value
            for metric in counter.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        )
    )


def serve_metrics(metrics: CoordinatorMetrics, listen: str) -> WSGIServer:
    """Serve ``metrics`` over HTTP at ``listen`` (``host:port``, port 0 picks one).

    Raises
    ------
    ConfigError
        When ``listen`` is malformed or cannot be bound.
    """
    host, _, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(
            f"metrics_listen {listen!r} is not host:port; use for example "
            "127.0.0.1:9464"
        )
    try:
        server, _ = start_http_server(
            int(port_text), addr=host, registry=metrics.registry
        )
    except OSError as error:
        raise ConfigError(
            f"cannot serve metrics on {listen!r} ({error}); check that no other "
            "process uses the port"
        ) from None
    if not _is_loopback(host):
        logger.warning(
            "metrics are served on %s, which is not a loopback address; anyone "
            "who reaches it sees the run's progress and traffic",
            listen,
        )
    logger.info("serving metrics on http://%s:%d/metrics", host, server.server_port)
    return server


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
