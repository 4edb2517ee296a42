"""Command line of the coordinator: `fedcdr-coordinator run`, `status` and `certs`.

Exit codes: 0 the run finished (or was finished before), 1 the run was aborted
(a missed quorum or an error during the run), 2 invalid command line,
configuration or certificate files, 4 the run store or a committed checkpoint
is missing, corrupt or from another run, 5 stopped by SIGTERM or SIGINT before
the end (start again with the same config to resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common import tls
from common.atomic import write_text_atomic
from common.accounting import PrivacySettingError
from common.certs import create_certificates
from common.cli import add_log_level_argument, configure_logging
from common.config import ConfigError, CoordinatorConfig, load_toml
from common.envconfig import COORDINATOR_VARIABLES, environment_overrides
from common.pb import federation_pb2_grpc as pb_grpc
from common.tensors import MAX_MESSAGE_BYTES
from server import store as runstore
from server.errors import StopRequestedError
from server.federation import Federation, QuorumError
from server.metrics import serve_metrics
from server.privacy import PrivacyLedger
from server.revocation import Revocations
from server.report import format_table
from server.secagg import MIN_PRIVATE_DOMAINS
from server.rounds import RoundLoop
from server.roundtable import RoundTableDisplay
from server.servicer import CoordinatorServicer
from server.status import format_status
from server.store import RunStore, StoreError

logger = logging.getLogger("server")

EXIT_OK = 0
EXIT_ABORTED = 1
EXIT_USAGE = 2
EXIT_STATE = 4
EXIT_STOPPED = 5
SERVICE_NAME = "fedcdr.v1.Coordinator"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedcdr-coordinator", description="fedcdr federation coordinator"
    )
    add_log_level_argument(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="serve one federated training run")
    run.add_argument("--config", type=Path, required=True, help="coordinator TOML file")
    run.add_argument("--listen", help="address to bind, overrides `listen`")
    run.add_argument("--state-dir", type=Path, help="overrides `state_dir`")
    run.add_argument("--store", type=Path, help="run store file, overrides `store`")
    run.add_argument(
        "--port-file",
        type=Path,
        help="write the bound host:port here once serving (useful with port 0)",
    )
    run.add_argument(
        "--insecure",
        action="store_true",
        help="serve without TLS and trust the domain each request names (tests only)",
    )
    run.add_argument(
        "--reflection",
        action="store_true",
        help="serve gRPC server reflection, overrides `reflection` (off by default)",
    )

    status = commands.add_parser(
        "status", help="print a run's rounds and metrics from its run store"
    )
    status.add_argument(
        "--config", type=Path, required=True, help="coordinator TOML file"
    )
    status.add_argument("--state-dir", type=Path, help="overrides `state_dir`")
    status.add_argument("--store", type=Path, help="run store file, overrides `store`")

    certs = commands.add_parser(
        "certs", help="create a CA, the coordinator certificate and domain certificates"
    )
    certs.add_argument("--out", type=Path, required=True, help="output directory")
    certs.add_argument(
        "--domains", required=True, help="comma-separated domain names, e.g. a,b,c"
    )
    certs.add_argument(
        "--hostname",
        action="append",
        help="name or IP clients dial the coordinator by; repeatable "
        "(default: localhost and 127.0.0.1)",
    )
    certs.add_argument("--days", type=int, default=365, help="validity in days (365)")
    certs.add_argument(
        "--force", action="store_true", help="replace an existing certificate set"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        if args.command == "certs":
            return _certs(args)
        if args.command == "status":
            return _status(args)
        return _run(args)
    except StoreError as error:
        logger.error("%s", error)
        return EXIT_STATE
    except (ConfigError, OSError, ValueError) as error:
        # Invalid configuration, certificates or paths: the message names the problem.
        logger.error("%s", error)
        logger.debug("details", exc_info=True)
        return EXIT_USAGE


def _certs(args: argparse.Namespace) -> int:
    domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    hostnames = args.hostname or ["localhost", "127.0.0.1"]
    created = create_certificates(
        args.out, domains, hostnames=hostnames, days=args.days, overwrite=args.force
    )
    print(f"created a CA and certificates for coordinator and {', '.join(domains)}")
    print(f"  {created.root}")
    return EXIT_OK


def _load_config(args: argparse.Namespace) -> CoordinatorConfig:
    insecure = getattr(args, "insecure", False)
    flags = {"tls": {"insecure": True}} if insecure else None
    overrides = environment_overrides(COORDINATOR_VARIABLES, flags)
    config = load_toml(CoordinatorConfig, args.config, overrides)
    changes: dict[str, Any] = {}
    if getattr(args, "listen", None):
        changes["listen"] = args.listen
    if args.state_dir:
        changes["state_dir"] = args.state_dir
    if args.store:
        changes["store"] = args.store
    if getattr(args, "reflection", False):
        changes["reflection"] = True
    return dataclasses.replace(config, **changes) if changes else config


def _status(args: argparse.Namespace) -> int:
    config = _load_config(args)
    store = RunStore.open(config, create=False)
    try:
        print(format_status(store), flush=True)
    finally:
        store.close()
    return EXIT_OK


def _open_store(config: CoordinatorConfig) -> RunStore | None:
    """Open the run store and check every committed checkpoint; return None
    when the run finished before, so there is nothing to serve."""
    store = RunStore.open(config)
    try:
        store.verify_checkpoints()
        status, _ = store.status()
    except BaseException:
        store.close()
        raise
    if status == runstore.DONE:
        # NOTE: clients that never fetched DONE before the crash keep retrying
        # until their connect_timeout_s and then exit with code 3.
        logger.warning(
            "run=%s finished earlier; `fedcdr-coordinator status --config FILE` "
            "prints its results. Use another run_id and state_dir for a new run",
            config.run_id,
        )
        store.close()
        return None
    return store


def _run(args: argparse.Namespace) -> int:
    config = _load_config(args)
    # Check the domain-level [dp] settings before the store records the run's
    # fingerprint, so a corrected setting starts the run instead of a mismatch.
    PrivacyLedger(config)
    if config.state_dir.exists() and not config.state_dir.is_dir():
        raise ConfigError(f"state_dir {config.state_dir} is a file; set it to a folder")
    config.state_dir.mkdir(parents=True, exist_ok=True)
    store = _open_store(config)
    if store is None:
        return EXIT_OK
    try:
        return _serve(config, store, args.port_file, args.config)
    finally:
        store.close()


def _serve(
    config: CoordinatorConfig,
    store: RunStore,
    port_file: Path | None,
    config_path: Path,
) -> int:
    federation = Federation(config, store=store)
    revocations = _revocations(config)
    server, health_servicer, address = _start_server(config, federation, revocations)
    try:
        metrics_server = (
            serve_metrics(federation.metrics, config.metrics_listen)
            if config.metrics_listen
            else None
        )
    except ConfigError:
        server.stop(grace=None)
        raise
    previous_handlers = _handle_stop_signals(federation, health_servicer)
    if revocations is not None:
        previous_handlers.update(_handle_reload_signal(revocations, config_path))
    if port_file:
        write_text_atomic(port_file, address + "\n")
    logger.info(
        "run=%s serving on %s domains=%s", config.run_id, address, config.domains
    )
    _warn_about_privacy(config)

    # A live table when stdout is a terminal, one log line per task otherwise.
    display = RoundTableDisplay(federation, sys.stdout)
    display.start()
    code = EXIT_OK
    try:
        summary = RoundLoop(config, federation).run()
        display.stop()
        print(format_table(summary), flush=True)
    except StopRequestedError:
        code = EXIT_STOPPED
    except (QuorumError, PrivacySettingError):
        code = EXIT_ABORTED
    except StoreError:
        raise
    except Exception:
        logger.exception("run=%s failed", config.run_id)
        code = EXIT_ABORTED
    finally:
        display.stop()
        # A client may be busy training; give it a round's deadline to see the end.
        if not federation.stopping:
            federation.wait_until_clients_saw_end(config.timeouts.round_s)
        _set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
        server.stop(grace=5).wait()
        for signum, previous in previous_handlers.items():
            signal.signal(signum, previous)
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
    logger.info("run=%s ended exit_code=%d", config.run_id, code)
    return code


def _handle_stop_signals(
    federation: Federation, health_servicer: health.HealthServicer
) -> dict[int, Any]:
    """Make SIGTERM and SIGINT stop the run and return the previous handlers.

    Health turns NOT_SERVING at once, and the round loop abandons the task in
    flight within a second.
    """

    def stop() -> None:
        _set_health(health_servicer, health_pb2.HealthCheckResponse.NOT_SERVING)
        federation.request_stop()

    def handler(signum: int, frame: object) -> None:
        if federation.stopping:
            return
        logger.warning(
            "received %s: stopping; the task in flight is abandoned and the run "
            "resumes at its last committed round on the next start",
            signal.Signals(signum).name,
        )
        # A thread, because the main thread may hold a lock that stop() needs.
        threading.Thread(target=stop, name="stop", daemon=True).start()

    if threading.current_thread() is not threading.main_thread():
        # Python delivers signals to the main thread only; an embedding
        # program (or a test) that runs main() elsewhere handles them itself.
        return {}
    return {
        signum: signal.signal(signum, handler)
        for signum in (signal.SIGTERM, signal.SIGINT)
    }


def _revocations(config: CoordinatorConfig) -> Revocations | None:
    """Load the revoked certificates, or return None when TLS is off."""
    if config.tls.insecure or config.tls.ca is None:
        return None
    ca_pem = tls.read_pem(config.tls.ca, "a CA certificate")
    return Revocations(ca_pem, config.revocation.crl, config.revocation.serials)


def _handle_reload_signal(
    revocations: Revocations, config_path: Path
) -> dict[int, Any]:
    """Make SIGHUP reload the revoked serials from the config file and the CRL,
    and return the previous handler."""

    def reload() -> None:
        try:
            config = load_toml(CoordinatorConfig, config_path)
            revocations.reload(config.revocation.serials)
        except ConfigError as error:
            logger.error(
                "SIGHUP: revocations not reloaded, the old ones stay: %s", error
            )

    def handler(signum: int, frame: object) -> None:
        threading.Thread(target=reload, name="reload", daemon=True).start()

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signal.SIGHUP: signal.signal(signal.SIGHUP, handler)}


def _set_health(
    health_servicer: health.HealthServicer,
    status: health_pb2.HealthCheckResponse.ServingStatus.ValueType,
) -> None:
    health_servicer.set(SERVICE_NAME, status)
    health_servicer.set("", status)


def _warn_about_privacy(config: CoordinatorConfig) -> None:
    """Log the settings under which the coordinator or a domain learns more."""
    if not config.secagg.enabled:
        logger.warning(
            "secagg.enabled = false: uploads are summed in the clear, so the "
            "coordinator sees each domain's update; use only for tests"
        )
    elif len(config.domains) < MIN_PRIVATE_DOMAINS:
        logger.warning(
            "only %d domains are configured: with fewer than %d, each domain can "
            "work out the others' updates from the aggregate and its own update",
            len(config.domains),
            MIN_PRIVATE_DOMAINS,
        )


def _enable_reflection(server: grpc.Server) -> None:
    """Serve the reflection service, which lists the coordinator, health and
    reflection services and their message types to every caller that passes
    the TLS handshake."""
    names = (
        SERVICE_NAME,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)
    logger.info("gRPC server reflection is on for %s", ", ".join(names))


def _start_server(
    config: CoordinatorConfig,
    federation: Federation,
    revocations: Revocations | None,
) -> tuple[grpc.Server, health.HealthServicer, str]:
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), options=options)
    pb_grpc.add_CoordinatorServicer_to_server(
        CoordinatorServicer(
            federation, insecure=config.tls.insecure, revocations=revocations
        ),
        server,
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:
        _enable_reflection(server)

    host = config.listen.rsplit(":", 1)[0]
    if config.tls.insecure:
        logger.warning(
            "serving WITHOUT TLS: any client can claim any domain; use only for tests"
        )
    try:
        if config.tls.insecure:
            port = server.add_insecure_port(config.listen)
        else:
            credentials = tls.server_credentials(*config.tls.files())
            port = server.add_secure_port(config.listen, credentials)
    except RuntimeError as error:
        raise ConfigError(
            f"cannot bind listen address {config.listen!r} ({error}); check that it "
            "is host:port and that no other process uses the port"
        ) from None
    if port == 0:
        raise ConfigError(f"cannot bind listen address {config.listen!r}")
    server.start()
    health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer, f"{host}:{port}"


if __name__ == "__main__":
    sys.exit(main())
