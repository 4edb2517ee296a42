"""`fedcdr-client serve`: the domain's gRPC recommendation service, over mutual TLS."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from pathlib import Path
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from client.recommend import (
    DEFAULT_K,
    Recommendations,
    Recommender,
    UnknownItemError,
    UnknownUserError,
)
from common import tls
from common.atomic import write_text_atomic
from common.config import ConfigError, ServeConfig
from common.pb import inference_pb2 as pb
from common.pb import inference_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME = "fedcdr.v1.Recommender"
# A request carries a user id or a history of at most MAX_HISTORY item ids, so
# 1 MiB is enough. A response carries at most MAX_K items with their texts.
MAX_REQUEST_BYTES = 1 << 20
MAX_RESPONSE_BYTES = 8 << 20
MAX_K = 1000
MAX_HISTORY = 10_000
# Seconds that requests in flight get to finish after SIGTERM.
STOP_GRACE_S = 5.0


class RecommenderServicer(pb_grpc.RecommenderServicer):
    """Validate each request, rank with the ``Recommender``, map errors to codes."""

    def __init__(self, recommender: Recommender) -> None:
        self.recommender = recommender

    def Recommend(
        self, request: pb.RecommendRequest, context: grpc.ServicerContext
    ) -> pb.RecommendResponse:
        subject = request.WhichOneof("subject")
        k = request.k or DEFAULT_K
        if k > MAX_K:
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"k is {k}, above the maximum of {MAX_K}; ask for fewer items",
            )
        try:
            if subject == "user_id":
                result = self.recommender.for_user(
                    request.user_id, k, request.include_seen
                )
            elif subject == "history":
                history = list(request.history.item_ids)
                if len(history) > MAX_HISTORY:
                    _abort(
                        context,
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"history has {len(history)} items, above the maximum of "
                        f"{MAX_HISTORY}; send the most recent ones",
                    )
                result = self.recommender.for_history(history, k, request.include_seen)
            else:
                _abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "the request sets neither user_id nor history; set one of them",
                )
        except (UnknownUserError, UnknownItemError) as error:
            logger.info("recommend: not found: %s", error)
            _abort(context, grpc.StatusCode.NOT_FOUND, str(error))
        except ValueError as error:
            logger.info("recommend: invalid request: %s", error)
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return to_proto(result)


def to_proto(result: Recommendations) -> pb.RecommendResponse:
    """Convert recommendations to the service's response message."""
    return pb.RecommendResponse(
        domain=result.domain,
        user_id=result.user_id or "",
        history=list(result.history),
        items=[
            pb.RecommendedItem(
                rank=item.rank, item_id=item.item_id, text=item.text, score=item.score
            )
            for item in result.items
        ],
    )


def _abort(
    context: grpc.ServicerContext, code: grpc.StatusCode, message: str
) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # grpc raises; this is unreachable


class RecommendationServer:
    """A started gRPC server with the recommender and the standard health service.

    Use ``start_server`` to build one. ``address`` is host:port with the bound
    port, so ``listen`` may use port 0.
    """

    def __init__(
        self, server: grpc.Server, health_servicer: health.HealthServicer, address: str
    ) -> None:
        self.server = server
        self.health = health_servicer
        self.address = address

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Report NOT_SERVING, then stop, giving requests in flight ``grace_s``."""
        for service in (SERVICE_NAME, ""):
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(grace=grace_s).wait()


def start_server(recommender: Recommender, config: ServeConfig) -> RecommendationServer:
    """Bind ``config.listen`` with mutual TLS and start serving.

    With ``config.tls.insecure`` it serves without TLS, which only tests should do.

    Raises
    ------
    ConfigError
        If the TLS settings are incomplete or the address cannot be bound.
    FileNotFoundError, ValueError
        If a certificate file is missing or invalid.
    """
    config.tls.check("serve.tls")
    credentials = (
        None if config.tls.insecure else tls.server_credentials(*config.tls.files())
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers),
        options=[
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
        ],
    )
    pb_grpc.add_RecommenderServicer_to_server(RecommenderServicer(recommender), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        if credentials is None:
            logger.warning("serving WITHOUT TLS: any caller is accepted; tests only")
            port = server.add_insecure_port(config.listen)
        else:
            port = server.add_secure_port(config.listen, credentials)
    except RuntimeError as error:
        raise ConfigError(
            f"cannot bind serve.listen {config.listen!r} ({error}); check that it is "
            "host:port and that no other process uses the port"
        ) from None
    server.start()
    for service in (SERVICE_NAME, ""):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    host = config.listen.rsplit(":", 1)[0]
    return RecommendationServer(server, health_servicer, f"{host}:{port}")


def serve_until_stopped(
    recommender: Recommender, config: ServeConfig, port_file: Path | None = None
) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully.

    The bound address is written to ``port_file`` once the server accepts
    requests. On a stop signal health turns NOT_SERVING and requests in flight
    get ``STOP_GRACE_S`` seconds to finish.
    """
    running = start_server(recommender, config)
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        logger.info("received %s: stopping the service", signal.Signals(signum).name)
        stop.set()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, handler)
    try:
        if port_file is not None:
            write_text_atomic(port_file, running.address + "\n")
        logger.info(
            "serving %s domain=%s on %s",
            SERVICE_NAME,
            recommender.domain,
            running.address,
        )
        # A timed wait, so the signal handler runs within a second on any platform.
        while not stop.wait(1.0):
            pass
    finally:
        running.stop()
        for number, old in previous.items():
            signal.signal(number, old)
    logger.info("service stopped")
