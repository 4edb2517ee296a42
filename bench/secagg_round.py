"""One aggregation round with and without secure aggregation, over real gRPC.

The coordinator runs in this process: a Federation behind a
CoordinatorServicer on a loopback port with mutual TLS. The clients run in
other processes. Each real client process serves one domain, and one more
process serves the simulated domains, one thread each. Plain and secure rounds
alternate, so a change of load on the machine affects both alike.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from common import tls
from common.certs import create_certificates
from common.config import CoordinatorConfig, TimeoutConfig, TLSConfig
from common.pb import federation_pb2 as pb
from common.pb import federation_pb2_grpc as pb_grpc
from common.secagg.vector import check_ring_fits, train_layout
from common.tensors import MAX_MESSAGE_BYTES
from server.aggregation import PlainSumAggregator
from server.federation import Federation, Stage, Task
from server.secagg import SecAggSession, SessionSettings
from server.servicer import CoordinatorServicer

logger = logging.getLogger("bench.secagg_round")

RUN_ID = "bench-secagg"
# Clipping bound of the synthetic deltas. Any positive value gives the same cost.
CLIP = 0.01
# Timeouts far above any round here, so that no client is dropped.
TIMEOUTS = TimeoutConfig(join_s=300.0, round_s=600.0, report_s=600.0, stage_s=600.0)
SECURE_STAGES = (
    "ADVERTISE_KEYS",
    "SHARE_KEYS",
    "MASKED_INPUT",
    "CONSISTENCY_CHECK",
    "UNMASK",
)


@dataclass
class RoundResult:
    """Timings of the measured rounds, in seconds, and what one client sent."""

    length: int
    real_clients: int
    simulated_clients: int
    plain_s: list[float] = field(default_factory=list)
    secure_s: list[float] = field(default_factory=list)
    # CPU seconds that the coordinator and client processes used in each round.
    plain_cpu_s: list[float] = field(default_factory=list)
    secure_cpu_s: list[float] = field(default_factory=list)
    secure_stage_s: list[dict[str, float]] = field(default_factory=list)
    request_bytes: dict[str, dict[str, int]] = field(default_factory=dict)
    max_abs_difference: float = 0.0
    # Largest error that quantization allows: the summed weight times one step.
    quantization_bound: float = 0.0
    # One-minute load average after each measured round.
    load_average: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Median secure round over median plain round."""
        return statistics.median(self.secure_s) / statistics.median(self.plain_s)

    @property
    def cpu_ratio(self) -> float:
        """Median CPU seconds of a secure round over those of a plain round."""
        return statistics.median(self.secure_cpu_s) / statistics.median(
            self.plain_cpu_s
        )


def cpu_seconds(pids: list[int]) -> float:
    """Return the user and system CPU seconds used so far by this process and
    by the processes ``pids``, which must be alive."""
    own = os.times()
    total = own.user + own.system
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        # Fields 14 and 15 of /proc/PID/stat, counted after the parenthesized
        # command name, are utime and stime in clock ticks.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


class StageClock(logging.Handler):
    """Record when the coordinator closes each secure-aggregation stage.

    It reads the INFO line "task=... stage=... closed with ... domains" of
    server.secagg, so the stage times are empty if that line changes.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.closed: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = str(record.msg)
        if "closed with" in message and isinstance(record.args, tuple):
            self.closed[str(record.args[1])] = time.perf_counter()


def _start_server(federation: Federation) -> tuple[grpc.Server, str]:
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=options)
    pb_grpc.add_CoordinatorServicer_to_server(CoordinatorServicer(federation), server)
    credentials = tls.server_credentials(*federation.config.tls.files())
    port = server.add_secure_port("127.0.0.1:0", credentials)
    if port == 0:
        raise RuntimeError("cannot bind a loopback port for the benchmark coordinator")
    server.start()
    return server, f"127.0.0.1:{port}"


def _start_clients(
    groups: list[list[tuple[str, int]]], address: str, certs: Path, length: int
) -> list[subprocess.Popen[str]]:
    processes = []
    for group in groups:
        domains = ",".join(f"{name}:{weight}" for name, weight in group)
        command = [
            sys.executable,
            "-m",
            "bench.secagg_client",
            "--address",
            address,
            "--certs",
            str(certs),
            "--domains",
            domains,
            "--length",
            str(length),
            "--bound",
            str(CLIP),
        ]
        processes.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=Path.cwd())
        )
    return processes


def _task(
    federation: Federation,
    task_id: str,
    index: int,
    secure: bool,
    length: int,
    weight_cap: int,
) -> Task:
    """Build a training task as RoundLoop does, with no download."""
    participants = federation.active_domains()
    layout = train_layout([("update", length - 1)], [CLIP])
    session = None
    if secure:
        secagg = federation.config.secagg
        check_ring_fits(layout, secagg.levels, len(participants), weight_cap)
        settings = SessionSettings(
            run_id=RUN_ID,
            mode=secagg.mode,
            threshold=secagg.threshold,
            neighbours=secagg.neighbours,
            levels=secagg.levels,
        )
        session = SecAggSession(settings, index, participants, layout, weight_cap)
    return Task(
        kind=pb.TASK_KIND_TRAIN,
        task_id=task_id,
        participants=participants,
        vector_length=layout.length,
        download=None,
        aggregator=None if secure else PlainSumAggregator(layout.length),
        round=index,
        secagg=session,
    )


def _run_round(
    federation: Federation, task: Task, clock: StageClock
) -> tuple[float, np.ndarray, dict[str, float]]:
    """Publish ``task`` and return the seconds until the coordinator has the sum,
    the sum, and the duration of each secure-aggregation stage."""
    clock.closed = {}
    start = time.perf_counter()
    federation.run_task(task, TIMEOUTS.round_s)
    if task.secagg is not None:
        total = task.secagg.total()
    elif task.aggregator is not None:
        total = task.aggregator.total()
    else:
        raise RuntimeError(f"task {task.task_id} has no aggregation")
    seconds = time.perf_counter() - start

    stages = {}
    previous = start
    for name in SECURE_STAGES:
        if name in clock.closed:
            stages[name] = clock.closed[name] - previous
            previous = clock.closed[name]
    return seconds, total, stages


def run_round_benchmark(
    work_dir: Path, length: int, real_clients: int, simulated: int, repeats: int
) -> RoundResult:
    """Run one warm-up and ``repeats`` measured rounds of each kind.

    ``length`` counts the whole plain vector: the deltas and the weight.
    """
    real = [(f"real-{i}", 50 + i) for i in range(real_clients)]
    sims = [(f"sim-{i:02d}", 60 + i) for i in range(simulated)]
    domains = [name for name, _ in real + sims]
    weight_cap = max(weight for _, weight in real + sims)
    certs = create_certificates(work_dir / "certs", domains)
    config = CoordinatorConfig(
        run_id=RUN_ID,
        domains=tuple(domains),
        listen="127.0.0.1:0",
        state_dir=work_dir / "state",
        tls=TLSConfig(
            ca=certs.coordinator_dir / "ca.pem",
            cert=certs.coordinator_dir / "cert.pem",
            key=certs.coordinator_dir / "key.pem",
        ),
        timeouts=TIMEOUTS,
    )
    federation = Federation(config)
    clock = StageClock()
    secagg_logger = logging.getLogger("server.secagg")
    secagg_logger.addHandler(clock)
    secagg_logger.setLevel(logging.INFO)

    server, address = _start_server(federation)
    groups = [[entry] for entry in real] + [sims]
    processes = _start_clients(groups, address, certs.root, length)
    pids = [process.pid for process in processes]
    result = RoundResult(length, real_clients, simulated)
    try:
        federation.wait_for_domains()
        federation.move_to(Stage.CODEBOOK)
        federation.move_to(Stage.TRAINING)
        _measure(federation, clock, result, length, weight_cap, repeats, pids)
        federation.move_to(Stage.FINISHING)
        federation.move_to(Stage.DONE)
        federation.wait_until_clients_saw_end(60.0)
    finally:
        federation.abort("the benchmark ended")
        outputs = [_finish_client(process) for process in processes]
        server.stop(grace=1).wait()
        secagg_logger.removeHandler(clock)
    _collect_bytes(result, outputs)
    return result


def _measure(
    federation: Federation,
    clock: StageClock,
    result: RoundResult,
    length: int,
    weight_cap: int,
    repeats: int,
    pids: list[int],
) -> None:
    schedule = [False, True] + [False, True] * repeats
    totals: dict[bool, np.ndarray] = {}
    for index, secure in enumerate(schedule, start=1):
        kind = "secure" if secure else "plain"
        task = _task(federation, f"{kind}-{index}", index, secure, length, weight_cap)
        cpu_before = cpu_seconds(pids)
        seconds, total, stages = _run_round(federation, task, clock)
        cpu = cpu_seconds(pids) - cpu_before
        totals[secure] = total
        logger.info(
            "round=%d kind=%s seconds=%.2f cpu_seconds=%.2f", index, kind, seconds, cpu
        )
        if index > 2:
            result.load_average.append(os.getloadavg()[0])
            (result.secure_s if secure else result.plain_s).append(seconds)
            (result.secure_cpu_s if secure else result.plain_cpu_s).append(cpu)
            if secure:
                result.secure_stage_s.append(stages)
        # Let the clients return to GetTask before the next round starts.
        time.sleep(0.5)
    difference = np.abs(totals[True] - totals[False])
    result.max_abs_difference = float(difference.max())
    step = 2 * CLIP / (federation.config.secagg.levels - 1)
    result.quantization_bound = float(totals[False][-1]) * step


def _finish_client(process: subprocess.Popen[str]) -> str:
    """Wait for a client process to exit after DONE or ABORT, killing it after
    two minutes, and return its output."""
    try:
        return process.communicate(timeout=120)[0]
    except subprocess.TimeoutExpired:
        logger.warning("client process %d did not exit; killing it", process.pid)
        process.kill()
        return process.communicate()[0]


def _collect_bytes(result: RoundResult, outputs: list[str]) -> None:
    """Keep the request bytes of the first real client's last task of each kind."""
    for output in outputs:
        for line in output.splitlines():
            record = json.loads(line)
            logger.debug("client record %s", record)
            if record["domain"] != "real-0":
                continue
            kind = "secure" if record["secure"] else "plain"
            result.request_bytes[kind] = record["request_bytes"]
