"""The `status` command's view of a run store: the run, its tasks and metrics."""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence

from server.report import MODELS, SELECTION_KEY
from server.store import RunStore, TaskRecord


def format_status(store: RunStore) -> str:
    """Render the run, its domains, every task attempt and the reported
    validation NDCG@10 by round, as plain text."""
    run = store.run_row()
    created = datetime.datetime.fromtimestamp(run["created_at"], datetime.UTC)
    lines = [
        f"run {run['run_id']}: {run['status']}, started {run['starts']} time(s), "
        f"created {created:%Y-%m-%d %H:%M:%S} UTC",
    ]
    if run["message"]:
        lines.append(f"  last message: {run['message']}")

    domains = store.domains()
    lines.append("")
    lines.append(f"domains ({len(domains)}):")
    for name, stats in domains.items():
        lines.append(
            f"  {name}: {stats.n_users} users, {stats.n_items} items, "
            f"{stats.n_interactions} interactions"
        )

    lines.append("")
    lines.extend(_task_table(store))

    commits = store.commits()
    rounds = sorted(c.number for c in commits if c.kind == "round")
    steps = sorted(c.number for c in commits if c.kind == "codebook")
    lines.append("")
    lines.append(
        f"committed: codebook steps {_ranges(steps)}, rounds {_ranges(rounds)}"
    )

    lines.append("")
    lines.extend(_metrics_table(store))
    return "\n".join(lines)


def _task_table(store: RunStore) -> list[str]:
    header = ("task", "kind", "start", "outcome", "seconds", "participants", "stages")
    rows = [header]
    for task in store.tasks():
        stages = store.stage_participants(task.task_id)
        rows.append(
            (
                task.task_id,
                task.kind,
                str(task.start),
                task.outcome or "in flight",
                _duration(task),
                ",".join(task.participants),
                " ".join(f"{stage}={len(d)}" for stage, d in stages.items()),
            )
        )
    if len(rows) == 1:
        return ["tasks: none yet"]
    return ["tasks:", *_align(rows)]


def _metrics_table(store: RunStore) -> list[str]:
    metrics = store.metrics()
    if not metrics:
        return ["metrics: none reported yet"]
    domains = sorted(metrics)
    lines = []
    for model in MODELS:
        rounds = sorted({r for d in domains for r in metrics[d].get(model, {})})
        if not rounds:
            continue
        rows = [("round", *domains)]
        for round_index in rounds:
            cells = []
            for domain in domains:
                entry = metrics[domain].get(model, {}).get(round_index)
                value = entry.valid.get(SELECTION_KEY) if entry is not None else None
                cells.append("-" if value is None else f"{value:.4f}")
            rows.append((str(round_index), *cells))
        lines.append(f"validation {SELECTION_KEY} by round ({model}):")
        lines.extend(_align(rows))
    return lines


def _duration(task: TaskRecord) -> str:
    if task.ended_at is None or math.isnan(task.ended_at):
        return "-"
    return f"{task.ended_at - task.started_at:.1f}"


def _ranges(numbers: list[int]) -> str:
    if not numbers:
        return "none"
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{numbers[0]}-{numbers[-1]}" if len(numbers) > 1 else str(numbers[0])
    return ",".join(str(n) for n in numbers)


def _align(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in rows
    ]
