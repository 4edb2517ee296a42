"""The coordinator's round table: rows from progress, rendering, tty switch."""

import dataclasses
import io
import logging
import os
import pty
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from rich.console import Console

from common.config import CoordinatorConfig, TimeoutConfig, TLSConfig
from common.pb import federation_pb2 as pb
from common.tensors import PLAIN_ENCODING
from server.aggregation import PlainSumAggregator
from server.federation import Federation, RunProgress, Task, TaskProgress
from server.roundtable import (
    RoundTable,
    RoundTableDisplay,
    format_bytes,
    format_row,
    render,
)
from tests.support.terminal import read_available

DOMAINS = ("a", "b", "c")
STATS = pb.DomainStats(n_users=10, n_items=20, n_interactions=100)


def _task(
    task_id="train-1",
    stage="masked_input",
    present=DOMAINS,
    finished=False,
    bytes_in=0,
    bytes_out=0,
):
    return TaskProgress(
        task_id=task_id,
        kind=pb.TASK_KIND_TRAIN,
        round=int(task_id.split("-")[1].split(".")[0]),
        step=0,
        stage=stage,
        participants=frozenset(DOMAINS),
        present=frozenset(present),
        dropped=frozenset(DOMAINS) - frozenset(present),
        finished=finished,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
    )


def _done(task_id="train-1", present=("a", "b"), bytes_in=0):
    return _task(task_id, "complete", present, finished=True, bytes_in=bytes_in)


def _progress(task, ndcg=None, finished=()):
    return RunProgress(
        stage="training",
        joined=frozenset(DOMAINS),
        task=task,
        valid_ndcg=ndcg or {},
        finished=tuple(finished),
    )


def _text(table, width=160):
    console = Console(file=io.StringIO(), width=width, record=True)
    console.print(table)
    return console.export_text()


def test_row_shows_task_bytes():
    table = RoundTable()

    table.update(_progress(_task(bytes_in=600, bytes_out=900)))

    row = table.rows[-1]
    assert row.bytes_in == 600
    assert row.bytes_out == 900


def test_row_finishes_once():
    table = RoundTable()
    table.update(_progress(_task()))

    done = _done(bytes_in=10)
    first = table.update(_progress(done, finished=[done]))
    second = table.update(_progress(done, finished=[done]))

    assert [row.task_id for row in first] == ["train-1"]
    assert second == []
    assert first[0].stage == "complete"
    assert first[0].dropped == ("c",)
    assert first[0].bytes_in == 10


def test_missed_tasks_still_finish_in_order():
    table = RoundTable()
    table.update(_progress(_task("train-1")))
    missed = [_done("train-1"), _done("train-2"), _done("train-3")]

    finished = table.update(_progress(_task("train-4"), finished=missed))

    assert [row.task_id for row in finished] == ["train-1", "train-2", "train-3"]
    assert [row.label for row in table.rows] == [
        "round 1",
        "round 2",
        "round 3",
        "round 4",
    ]


def test_trimmed_finished_row_not_repeated():
    table = RoundTable(max_rows=2)
    finished = [_done(f"train-{number}") for number in range(1, 5)]

    first = table.update(_progress(None, finished=finished))
    second = table.update(_progress(None, finished=finished))

    assert len(first) == 4
    assert second == []
    assert [row.label for row in table.rows] == ["round 3", "round 4"]


def test_rows_keep_latest_ndcg():
    table = RoundTable()

    table.update(_progress(_task(), {"a": 0.1}))
    table.update(_progress(_task(), {"a": 0.2, "b": 0.3}))

    assert table.rows[-1].valid_ndcg == {"a": 0.2, "b": 0.3}


def test_rows_trimmed_to_max():
    table = RoundTable(max_rows=3)

    for number in range(1, 6):
        table.update(_progress(_task(f"train-{number}")))

    assert [row.label for row in table.rows] == ["round 3", "round 4", "round 5"]


def test_no_task_adds_no_row():
    table = RoundTable()

    assert table.update(_progress(None)) == []
    assert table.rows == []


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (5 * 2**20, "5.0 MiB"),
        (3 * 2**30, "3.0 GiB"),
    ],
)
def test_format_bytes(count, text):
    assert format_bytes(count) == text


def test_render_shows_every_column():
    table = RoundTable()
    task = _task(present=("a", "b"), bytes_in=1536, bytes_out=2048)
    table.update(_progress(task, {"a": 0.1234}))

    text = _text(render(table, "demo", DOMAINS))

    assert "run demo: training, joined 3 of 3" in text
    assert "domain columns: latest validation NDCG@10" in text
    for header in ("task", "stage", "present", "dropped", "in", "out", "c"):
        assert header in text
    assert "round 1" in text
    assert "masked_input" in text
    assert "2/3" in text
    assert "1.5 KiB" in text
    assert "2.0 KiB" in text
    assert "0.1234" in text


def test_render_privacy_adds_epsilon_column():
    table = RoundTable()
    done = dataclasses.replace(_done(), epsilon=2.4567)
    table.update(_progress(_task("train-2"), finished=[done]))

    plain = _text(render(table, "demo", DOMAINS))
    text = _text(render(table, "demo", DOMAINS, privacy=True))

    assert "epsilon" not in plain
    assert "epsilon" in text
    assert "2.46" in text
    # A task without an epsilon shows a dash.
    round_two = next(line for line in text.splitlines() if "round 2" in line)
    assert " - " in round_two


def test_render_keeps_last_rows_unwrapped():
    table = RoundTable()
    for number in range(1, 6):
        done = _done(f"train-{number}", bytes_in=5 * 2**20)
        table.update(_progress(done, {"a": 0.5}, finished=[done]))

    text = _text(render(table, "narrow", DOMAINS, max_rows=2), width=80)
    lines = [line for line in text.splitlines() if "round" in line]

    assert len(lines) == 2
    assert "round 4" in lines[0]
    assert "5.0 MiB" in lines[0]
    assert "round 5" in lines[1]


def test_format_row_is_one_line():
    table = RoundTable()
    done = _done(bytes_in=2048)
    (row,) = table.update(_progress(done, {"b": 0.5}, finished=[done]))

    line = format_row(row)

    assert "\n" not in line
    assert "task=train-1 (round 1) stage=complete" in line
    assert "present=a,b dropped=c" in line
    assert "bytes_in=2048" in line
    assert "b=0.5000" in line
    assert "epsilon" not in line


def test_format_row_adds_epsilon():
    table = RoundTable()
    done = dataclasses.replace(_done(), epsilon=2.4567)
    (row,) = table.update(_progress(done, finished=[done]))

    assert "epsilon=2.457 valid_ndcg@10" in format_row(row)


def _federation():
    config = CoordinatorConfig(
        run_id="table",
        domains=DOMAINS,
        min_domains=1,
        tls=TLSConfig(insecure=True),
        timeouts=TimeoutConfig(round_s=5.0),
    )
    federation = Federation(config)
    for domain in DOMAINS:
        federation.join(domain, STATS)
    return federation


def _plain_task(federation):
    return Task(
        kind=pb.TASK_KIND_TRAIN,
        task_id="train-1",
        participants=federation.active_domains(),
        vector_length=2,
        download=None,
        aggregator=PlainSumAggregator(2),
        round=1,
    )


def _upload(federation, domain):
    payload = np.array([1.0, 2.0], dtype="<f8").tobytes()
    federation.upload(domain, "train-1", PLAIN_ENCODING, payload)


def _run_task_with_upload(federation, domain):
    """Run a plain task with a 0.5 s deadline in which only ``domain`` uploads."""
    task = _plain_task(federation)
    runner = threading.Thread(target=federation.run_task, args=(task, 0.5))
    runner.start()
    time.sleep(0.1)
    _upload(federation, domain)
    runner.join(10)


def test_progress_follows_plain_task():
    federation = _federation()
    task = _plain_task(federation)
    runner = threading.Thread(target=federation.run_task, args=(task, 1.0))

    runner.start()
    time.sleep(0.2)
    during = federation.progress().task
    _upload(federation, "a")
    _upload(federation, "b")
    runner.join(10)
    progress = federation.progress()
    after = progress.task

    assert during.stage == "upload"
    assert during.present == frozenset(DOMAINS)
    assert not during.finished
    assert after.finished
    assert after.stage == "done"
    assert after.present == frozenset({"a", "b"})
    assert after.dropped == frozenset({"c"})
    assert progress.finished == (after,)


def test_progress_reports_latest_ndcg():
    federation = _federation()
    for number, value in ((0, 0.1), (1, 0.4)):
        request = pb.ReportMetricsRequest(
            domain="a",
            model="federated",
            rounds=[pb.RoundMetrics(round=number, valid={"ndcg@10": value})],
        )
        federation.report("a", request)

    assert federation.progress().valid_ndcg == {"a": 0.4}


def test_display_draws_table_on_terminal():
    federation = _federation()
    primary, secondary = pty.openpty()
    stream = os.fdopen(secondary, "w")
    display = RoundTableDisplay(federation, stream, poll_s=0.05)

    display.start()
    _run_task_with_upload(federation, "a")
    display.stop()
    stream.close()
    output = read_available(primary, timeout_s=1.0)
    os.close(primary)

    assert display.live
    assert "run table" in output
    assert "round 1" in output
    assert "latest validation NDCG@10" in output


def test_display_logs_rows_off_terminal(caplog):
    federation = _federation()
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    display = RoundTableDisplay(federation, stream, poll_s=0.05)

    with caplog.at_level(logging.INFO, logger="server.roundtable"):
        display.start()
        _run_task_with_upload(federation, "a")
        time.sleep(0.3)
        display.stop()
    stream.close()
    written = read_available(read_end, timeout_s=1.0)
    os.close(read_end)

    assert not display.live
    assert written == ""
    assert "task=train-1 (round 1) stage=done present=a dropped=b,c" in caplog.text


def _coordinator(tmp_path, stdout):
    config = tmp_path / "coordinator.toml"
    config.write_text(
        'run_id = "tty"\ndomains = ["a"]\nlisten = "127.0.0.1:0"\n'
        'state_dir = "state"\n[tls]\ninsecure = true\n[timeouts]\njoin_s = 1\n'
    )
    return subprocess.Popen(
        [sys.executable, "-m", "server.main", "run", "--config", str(config)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        cwd=os.getcwd(),
    )


def test_coordinator_draws_table_on_pty(tmp_path):
    primary, secondary = pty.openpty()

    process = _coordinator(tmp_path, secondary)
    os.close(secondary)
    _, errors = process.communicate(timeout=120)
    output = read_available(primary, timeout_s=2.0)
    os.close(primary)

    # No domain joins within join_s, so the run is aborted with exit code 1.
    assert process.returncode == 1, errors.decode()[-2000:]
    assert "run tty: waiting_for_domains, joined 0 of 1" in output
    assert "latest validation NDCG@10" in output


def test_coordinator_prints_no_table_to_pipe(tmp_path):
    process = _coordinator(tmp_path, subprocess.PIPE)
    output, errors = process.communicate(timeout=120)

    assert process.returncode == 1, errors.decode()[-2000:]
    assert b"NDCG@10" not in output
    assert b"joined 0 of 1" not in output
    assert b"0 of 1 domains joined within" in errors
