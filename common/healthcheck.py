"""`fedcdr-healthcheck`: ask a coordinator's gRPC health service if it is serving.

The coordinator requires a client certificate from its CA on every connection,
health checks included, so the probe presents one. A certificate whose common
name is in no run's `domains` list (the compose federation makes one named
`monitor`) can ask for health but cannot join a run.

Exit codes: 0 the service is SERVING, 1 it is not or cannot be reached in
time, 2 invalid command line or certificate files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common import tls

EXIT_SERVING = 0
EXIT_NOT_SERVING = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedcdr-healthcheck",
        description="check the gRPC health service of a fedcdr coordinator",
    )
    parser.add_argument(
        "--address", default="localhost:50051", help="host:port (localhost:50051)"
    )
    parser.add_argument("--ca", type=Path, required=True, help="CA certificate, PEM")
    parser.add_argument("--cert", type=Path, help="client certificate, PEM")
    parser.add_argument("--key", type=Path, help="client private key, PEM")
    parser.add_argument(
        "--service",
        default="fedcdr.v1.Coordinator",
        help="service name to check; '' checks the server as a whole "
        "(fedcdr.v1.Coordinator)",
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for a reply (5)"
    )
    return parser


def check(
    address: str,
    credentials: grpc.ChannelCredentials,
    service: str,
    timeout_s: float,
) -> str:
    """Return the name of the serving status ``address`` reports for ``service``.

    Raises
    ------
    grpc.RpcError
        When the coordinator cannot be reached within ``timeout_s`` or does
        not know ``service``.
    """
    with grpc.secure_channel(address, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        response = stub.Check(request, timeout=timeout_s)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cert is None or args.key is None:
        print(
            "fedcdr-healthcheck: --cert and --key are required, because the "
            "coordinator accepts only clients with a certificate from its CA",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        credentials = tls.channel_credentials(args.ca, args.cert, args.key)
    except (OSError, ValueError) as error:
        print(f"fedcdr-healthcheck: {error}", file=sys.stderr)
        return EXIT_USAGE

    try:
        status = check(args.address, credentials, args.service, args.timeout)
    except grpc.RpcError as error:
        print(
            f"fedcdr-healthcheck: {args.address} did not answer the health check "
            f"for {args.service!r}: {error.code().name}: {error.details()}",
            file=sys.stderr,
        )
        return EXIT_NOT_SERVING
    print(f"{args.address} {args.service or '(server)'}: {status}")
    return EXIT_SERVING if status == "SERVING" else EXIT_NOT_SERVING


if __name__ == "__main__":
    sys.exit(main())
