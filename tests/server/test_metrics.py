"""Prometheus metrics of the coordinator, scraped over HTTP on loopback."""

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.config import ConfigError
from server.federation import Federation
from server.metrics import CoordinatorMetrics, serve_metrics
from server.rounds import RoundLoop
from tests.server.test_rounds import _config, _start_clients


def _scrape(port: int) -> dict:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode("utf-8")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = sample.value
    return samples


def test_metrics_count_rounds_and_stages(tmp_path):
    config = _config(tmp_path, rounds=3)
    federation = Federation(config)
    server = serve_metrics(federation.metrics, "127.0.0.1:0")
    try:
        threads = _start_clients(federation, [])
        RoundLoop(config, federation).run()
        for thread in threads:
            thread.join(10)
        samples = _scrape(server.server_port)
    finally:
        server.shutdown()
        server.server_close()

    # Codebook moments, two k-means steps, three rounds and the finish.
    assert samples[("fedcdr_rounds_completed_total", ())] == 3
    assert samples[("fedcdr_round", ())] == 3
    assert samples[("fedcdr_stage_duration_seconds_count", (("stage", "upload"),))] == 7
    assert samples[("fedcdr_task_participants", ())] == 2
    assert samples[("fedcdr_task_completed_domains", ())] == 2
    assert samples[("fedcdr_dropouts_total", ())] == 0
    assert samples[("fedcdr_aggregation_seconds_count", ())] == 6


def test_metrics_count_dropouts():
    metrics = CoordinatorMetrics()

    metrics.record_task(participants=5, completed=3)
    metrics.record_task(participants=4, completed=4)

    assert metrics.registry.get_sample_value("fedcdr_dropouts_total") == 2
    assert metrics.registry.get_sample_value("fedcdr_task_participants") == 4


@pytest.mark.parametrize(
    "listen", ["9464", "127.0.0.1:http", ":9464", "127.0.0.1:70000"]
)
def test_metrics_listen_must_be_host_port(listen):
    with pytest.raises(ConfigError, match="is not host:port"):
        serve_metrics(CoordinatorMetrics(), listen)
