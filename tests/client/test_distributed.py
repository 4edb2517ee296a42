"""Data-parallel local training across 2 real processes over gloo on 127.0.0.1."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

from client.distributed import (
    DistributedError,
    RankGroup,
    join_ranks,
    ranks_from_environment,
)
from common.config import ConfigError, DistributedConfig
from common.model import GlobalEncoder
from tests.support import ranks

ROOT = Path(__file__).resolve().parents[2]


def _start_ranks(folder: Path, scenario: str) -> list[subprocess.Popen]:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tests.support.ranks", folder, str(rank), scenario],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]


def _finish(processes: list[subprocess.Popen], timeout_s: float = 120) -> list[str]:
    try:
        return [process.communicate(timeout=timeout_s)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _key_bias_positions() -> list[int]:
    """Return the upload vector positions of every layer's self-attention key bias."""
    hidden = ranks.MODEL.hidden_size
    positions: list[int] = []
    offset = 0
    for name, value in GlobalEncoder(ranks.MODEL).state_dict().items():
        if name.endswith("self_attn.in_proj_bias"):
            positions.extend(range(offset + hidden, offset + 2 * hidden))
        offset += value.numel()
    return positions


def test_two_ranks_match_single_process(tmp_path):
    processes = _start_ranks(tmp_path, "match")
    logs = _finish(processes)
    assert processes[0].returncode == 0, logs[0]
    assert processes[1].returncode == 0, logs[1]

    result = json.loads((tmp_path / "rank0.json").read_text())
    expected, expected_loss = ranks.run_single_process(ranks.make_split())
    for round_index, vector in enumerate(result["vectors"]):
        got = np.asarray(vector)
        want = expected[round_index]
        # The key bias of self-attention gets a true gradient of 0, because
        # softmax ignores a shift shared by all keys. Its computed gradient is
        # rounding noise, which Adam scales up to steps of about the learning
        # rate in either run, so those values cannot be compared.
        compared = np.ones(len(want), dtype=bool)
        compared[_key_bias_positions()] = False
        compared[-1] = False
        scale = np.abs(want[compared]).max()
        assert scale > 0
        np.testing.assert_allclose(
            got[compared], want[compared], rtol=0, atol=2e-5 * scale
        )
        assert got[-1] == expected[round_index][-1]
    assert result["train_loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_ranks_reject_different_data(tmp_path):
    processes = _start_ranks(tmp_path, "other-data")
    logs = _finish(processes)
    for rank, process in enumerate(processes):
        assert process.returncode == 4, logs[rank]
        message = (tmp_path / f"error-{rank}.txt").read_text()
        assert "rank 1 has data_sha256" in message
        assert "identical copy of the data folder" in message


def test_join_rejects_more_ranks_than_users(tmp_path):
    config = ranks.client_config(tmp_path)
    url = f"file://{tmp_path / 'store'}?rank=0&world_size=2"
    with pytest.raises(DistributedError) as caught:
        join_ranks(config, ranks.make_split(1), url)
    message = str(caught.value)
    assert "started 2 ranks" in message
    assert "only 1 training sequences" in message
    assert "start at most 1 ranks" in message


@pytest.mark.parametrize(
    "fault", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stopped"]
)
def test_rank_zero_fails_when_rank_one_stops(tmp_path, fault):
    processes = _start_ranks(tmp_path, "hold")
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "built").exists():
            assert processes[0].poll() is None, processes[0].communicate()[0]
            assert time.monotonic() < deadline, "rank 0 did not build the model"
            time.sleep(0.05)
        processes[1].send_signal(fault)
        (tmp_path / "go").write_text("yes")
        log = processes[0].communicate(timeout=60)[0]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    assert processes[0].returncode == 4, log
    message = (tmp_path / "error-0.txt").read_text()
    assert "rank 0 of 2 failed while broadcasting the global weights" in message
    assert "distributed.timeout_s = 4.0 s" in message
    elapsed = float((tmp_path / "elapsed").read_text())
    assert elapsed < ranks.TIMEOUT_S + 10


@pytest.mark.parametrize(
    ("environ", "expected"),
    [({}, (0, 1)), ({"RANK": "1", "WORLD_SIZE": "3"}, (1, 3))],
)
def test_ranks_from_environment(environ, expected):
    assert ranks_from_environment(environ) == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE must be a whole number, got 'two'"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK = 2 and WORLD_SIZE = 2 are invalid"),
        ({"WORLD_SIZE": "0"}, "RANK = 0 and WORLD_SIZE = 0 are invalid"),
    ],
)
def test_ranks_from_environment_rejects(environ, message):
    with pytest.raises(DistributedError, match=message):
        ranks_from_environment(environ)


def test_distributed_config_rejects_nccl():
    with pytest.raises(ConfigError, match="got 'nccl'; the client trains on CPU"):
        DistributedConfig(backend="nccl")


def test_distributed_config_rejects_zero_timeout():
    with pytest.raises(ConfigError, match="distributed.timeout_s must be positive"):
        DistributedConfig(timeout_s=0)


def test_receive_command_times_out(tmp_path):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    config = DistributedConfig(idle_timeout_s=0.5)
    group = RankGroup(rank=1, world_size=2, store=store, config=config)

    started = time.monotonic()
    with pytest.raises(DistributedError) as caught:
        group.receive_command()

    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "rank 1 received no command from rank 0" in message
    assert "distributed.idle_timeout_s = 0.5 s" in message


def test_commands_arrive_in_order(tmp_path):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    config = DistributedConfig(idle_timeout_s=5)
    sender = RankGroup(rank=0, world_size=2, store=store, config=config)
    receiver = RankGroup(rank=1, world_size=2, store=store, config=config)

    sender.send_command({"command": "train"})
    sender.stop("done")
    sender.stop("ignored, because the group is stopped")

    assert receiver.receive_command() == {"command": "train"}
    assert receiver.receive_command() == {
        "command": "stop",
        "reason": "done",
        "failed": False,
    }
    assert sender.sent == 2
