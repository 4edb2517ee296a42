"""Summarize the clients' reported metrics: metrics.json, history, plot and table."""

from __future__ import annotations

import json
import math
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.atomic import write_bytes_atomic, write_text_atomic
from common.pb import federation_pb2 as pb
from server.federation import DomainRecord

logger = logging.getLogger(__name__)

MODELS = ("federated", "local_only")
METRIC_KEYS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")
SELECTION_KEY = "ndcg@10"


def best_round(history: Mapping[int, pb.RoundMetrics]) -> pb.RoundMetrics:
    """Return the round with the highest validation NDCG@10; the earliest on ties."""
    if not history:
        raise ValueError("no round was reported")
    return max(
        (history[r] for r in sorted(history)),
        key=lambda m: m.valid.get(SELECTION_KEY, float("-inf")),
    )


def summarize(domains: Mapping[str, DomainRecord]) -> dict[str, Any]:
    """Build the metrics.json content: per domain, test metrics of each model at
    its best validation round, next to the domain's size."""
    summary: dict[str, Any] = {}
    for name in sorted(domains):
        record = domains[name]
        entry: dict[str, Any] = {
            "users": record.stats.n_users,
            "items": record.stats.n_items,
            "interactions": record.stats.n_interactions,
        }
        entry["completed"] = set(MODELS) <= record.final
        if not entry["completed"]:
            logger.warning(
                "domain=%s sent no final report; its results are partial", name
            )
        for model in MODELS:
            history = record.reports.get(model)
            if not history:
                continue
            best = best_round(history)
            entry[model] = {key: best.test.get(key) for key in METRIC_KEYS}
            entry[model]["best_round"] = best.round
            entry[model]["valid_ndcg@10"] = best.valid.get(SELECTION_KEY)
        summary[name] = entry
    return summary


def history(domains: Mapping[str, DomainRecord]) -> dict[str, Any]:
    """Return every reported round, per domain and model, as plain dictionaries."""
    result: dict[str, Any] = {}
    for name in sorted(domains):
        result[name] = {
            model: [
                {
                    "round": m.round,
                    "valid": dict(m.valid),
                    "test": dict(m.test),
                    "valid_loss": m.valid_loss,
                    # Round 0 has no training loss; JSON has no NaN.
                    "train_loss": None if math.isnan(m.train_loss) else m.train_loss,
                }
                for m in (rounds[r] for r in sorted(rounds))
            ]
            for model, rounds in domains[name].reports.items()
        }
    return result


def format_table(summary: Mapping[str, Any]) -> str:
    """Render the per-domain table of federated versus local-only test metrics."""
    header = (
        "domain",
        "users",
        "items",
        "fed R@10",
        "fed N@10",
        "local R@10",
        "local N@10",
        "N@10 gain",
    )
    rows = [header]
    for name, entry in summary.items():
        if not entry.get("completed", True):
            name = f"{name} (dropped)"
        fed = entry.get("federated", {})
        local = entry.get("local_only", {})
        gain = "-"
        if fed.get("ndcg@10") and local.get("ndcg@10"):
            gain = f"{(fed['ndcg@10'] / local['ndcg@10'] - 1) * 100:+.1f}%"
        rows.append(
            (
                name,
                str(entry["users"]),
                str(entry["items"]),
                _number(fed.get("recall@10")),
                _number(fed.get("ndcg@10")),
                _number(local.get("recall@10")),
                _number(local.get("ndcg@10")),
                gain,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def write_reports(
    out_dir: Path,
    domains: Mapping[str, DomainRecord],
    privacy: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write metrics.json, history.json and validation_ndcg.png into ``out_dir``.

    ``privacy`` maps a domain to its privacy entry (epsilon, delta and noise
    settings after the last committed round), stored under the domain's
    ``privacy`` key of metrics.json.
    """
    summary = summarize(domains)
    for name, entry in (privacy or {}).items():
        if name in summary:
            summary[name]["privacy"] = dict(entry)
    write_text_atomic(out_dir / "metrics.json", json.dumps(summary, indent=2) + "\n")
    rounds = history(domains)
    write_text_atomic(out_dir / "history.json", json.dumps(rounds, indent=2) + "\n")
    write_bytes_atomic(out_dir / "validation_ndcg.png", plot_validation(rounds))
    logger.info(
        "wrote metrics.json, history.json and validation_ndcg.png to %s", out_dir
    )
    return summary


def plot_validation(rounds: Mapping[str, Any]) -> bytes:
    """Return a PNG of validation NDCG@10 by round: solid federated, dashed local-only."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=110)
    for index, (domain, models) in enumerate(rounds.items()):
        color = f"C{index % 10}"
        for model, style in (("federated", "-"), ("local_only", "--")):
            points = models.get(model, [])
            if not points:
                continue
            axes.plot(
                [p["round"] for p in points],
                [p["valid"].get(SELECTION_KEY, 0.0) for p in points],
                style,
                color=color,
                marker="o" if model == "federated" else None,
                markersize=3,
                label=f"{domain} ({model.replace('_', '-')})",
            )
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("round")
    axes.set_ylabel("validation NDCG@10")
    axes.set_title("Validation NDCG@10 by round")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
