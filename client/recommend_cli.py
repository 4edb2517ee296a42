"""The `fedcdr-client recommend` and `serve` commands: arguments and handlers."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import faiss
import torch

from client.recommend import DEFAULT_K, Recommendations, Recommender
from common.config import ClientConfig, load_toml
from common.envconfig import CLIENT_VARIABLES, environment_overrides

logger = logging.getLogger(__name__)

# Item texts longer than this are shortened in the table; JSON has them whole.
TABLE_TEXT_WIDTH = 60


def add_recommend_commands(commands: Any) -> None:
    """Add the `recommend` and `serve` subcommands to the client's parser."""
    recommend = commands.add_parser(
        "recommend", help="rank the domain's items with its saved local model"
    )
    _add_model_arguments(recommend)
    subject = recommend.add_mutually_exclusive_group(required=True)
    subject.add_argument("--user", metavar="USER_ID", help="a user id of the domain")
    subject.add_argument(
        "--history",
        metavar="ITEM_ID,...",
        help="comma-separated item ids, oldest first, for a sequence not in the data",
    )
    subject.add_argument(
        "--all", action="store_true", help="every user of the domain; needs --out"
    )
    recommend.add_argument(
        "-k", type=int, default=DEFAULT_K, help=f"items per user ({DEFAULT_K})"
    )
    recommend.add_argument(
        "--include-seen",
        action="store_true",
        help="keep items of the user's history in the ranking (left out by default)",
    )
    recommend.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="output of --user and --history (table)",
    )
    recommend.add_argument(
        "--out",
        type=Path,
        help="output file of --all; .csv or .parquet selects the format",
    )
    recommend.add_argument(
        "--batch-size",
        type=int,
        default=256,
        help="users scored at once by --all (256)",
    )

    serve = commands.add_parser(
        "serve", help="serve recommendations over gRPC with mutual TLS"
    )
    _add_model_arguments(serve)
    serve.add_argument("--listen", help="host:port, overrides serve.listen")
    serve.add_argument(
        "--port-file", type=Path, help="write the bound host:port here once serving"
    )


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        required=True,
        help="client TOML file: data_dir, work_dir, threads and [serve]",
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="saved model file (default: work_dir/model.safetensors)",
    )
    parser.add_argument(
        "--threads", type=int, help="torch threads, overrides `threads`"
    )


def run_recommend(args: argparse.Namespace) -> int:
    """Print one ranking, or export every user's ranking to ``--out``."""
    from client.export import export_format, write_recommendations

    if args.all and args.out is None:
        raise ValueError("--all needs --out FILE (.csv or .parquet)")
    if args.out is not None and not args.all:
        raise ValueError("--out is only for --all; --user and --history print")
    if args.k < 1:
        raise ValueError(f"-k must be at least 1, got {args.k}")
    if args.out is not None:
        export_format(args.out)  # check the suffix before the slow loading
    history = _parse_history(args.history) if args.history is not None else None

    config = _load_config(args)
    recommender = _open(config, args.model)
    if args.all:
        batches = recommender.all_users(args.k, args.include_seen, args.batch_size)
        write_recommendations(batches, args.out, len(recommender.histories))
        return 0
    if history is not None:
        result = recommender.for_history(history, args.k, args.include_seen)
    else:
        result = recommender.for_user(args.user, args.k, args.include_seen)
    print(format_recommendations(result, args.format))
    return 0


def run_serve(args: argparse.Namespace) -> int:
    """Serve recommendations until SIGTERM or SIGINT."""
    from client.serve import serve_until_stopped

    config = _load_config(args)
    if args.listen:
        serve = dataclasses.replace(config.serve, listen=args.listen)
        config = dataclasses.replace(config, serve=serve)
    config.serve.tls.check("serve.tls")
    serve_until_stopped(_open(config, args.model), config.serve, args.port_file)
    return 0


def format_recommendations(result: Recommendations, fmt: str) -> str:
    """Format recommendations as "table" (for people) or "json"."""
    if fmt == "json":
        return json.dumps(result.to_dict(), ensure_ascii=False, indent=2)
    subject = (
        f"user {result.user_id}"
        if result.user_id is not None
        else f"history of {len(result.history)} items"
    )
    rows = [("rank", "item_id", "text", "score")]
    for item in result.items:
        text = item.text
        if len(text) > TABLE_TEXT_WIDTH:
            text = text[: TABLE_TEXT_WIDTH - 3] + "..."
        rows.append((str(item.rank), item.item_id, text, f"{item.score:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"domain {result.domain}, {subject}: top {len(result.items)}"]
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _parse_history(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    for position, item in enumerate(items, start=1):
        if not item:
            raise ValueError(
                f"--history {text!r} has an empty item id at position {position}; "
                "separate item ids with single commas"
            )
    return items


def _load_config(args: argparse.Namespace) -> ClientConfig:
    config = load_toml(
        ClientConfig, args.config, environment_overrides(CLIENT_VARIABLES, None)
    )
    if args.threads is not None:
        config = dataclasses.replace(config, threads=args.threads)
    return config


def _open(config: ClientConfig, model: Path | None) -> Recommender:
    from client.recommend import open_recommender
    from client.session import MODEL_FILE

    torch.set_num_threads(config.threads)
    faiss.omp_set_num_threads(config.threads)
    return open_recommender(
        model or config.work_dir / MODEL_FILE,
        config.data_dir,
        config.work_dir / "cache",
    )
