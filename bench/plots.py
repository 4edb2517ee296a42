"""PNG plots of the quality study: test NDCG@10 per variant and validation curves."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_ndcg(dataset: str, summary: dict[str, Any]) -> bytes:
    """Bar chart of test NDCG@10 (mean over seeds, std as error bar) per domain."""
    variants = list(summary["variants"])
    domains = list(next(iter(summary["variants"].values())))
    width = 0.8 / len(variants)
    figure, axes = plt.subplots(figsize=(2 + 1.6 * len(domains), 4))
    for index, name in enumerate(variants):
        entries = [summary["variants"][name][d]["ndcg@10"] for d in domains]
        axes.bar(
            [i + index * width for i in range(len(domains))],
            [e["mean"] for e in entries],
            width,
            yerr=[e["std"] for e in entries],
            label=name,
        )
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(domains))], domains)
    axes.set_ylabel("test NDCG@10")
    axes.set_title(f"{dataset}: test NDCG@10 at the best validation round")
    axes.legend(fontsize="small")
    return _png(figure)


def plot_validation(dataset: str, curves: dict[str, dict[str, list[float]]]) -> bytes:
    """Validation NDCG@10 by evaluation, one panel per domain, first seed."""
    domains = list(next(iter(curves.values())))
    figure, panels = plt.subplots(
        1, len(domains), figsize=(4 * len(domains), 3.5), squeeze=False
    )
    for panel, domain in zip(panels[0], domains, strict=True):
        for name, per_domain in curves.items():
            values = per_domain[domain]
            panel.plot(range(len(values)), values, label=name)
        panel.set_title(domain)
        panel.set_xlabel("round, then prompt-tuning epoch")
        panel.set_ylabel("validation NDCG@10")
    panels[0][0].legend(fontsize="small")
    figure.suptitle(dataset)
    return _png(figure)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
