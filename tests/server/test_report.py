"""Best-round selection and the summary files of a finished run."""

import json

import pytest

from common.pb import federation_pb2 as pb
from server.federation import DomainRecord
from server.report import best_round, format_table, summarize, write_reports


def _metrics(round_index: int, valid_ndcg: float, test_ndcg: float) -> pb.RoundMetrics:
    test = {"recall@10": 2 * test_ndcg, "ndcg@10": test_ndcg}
    test.update({"recall@50": 0.5, "ndcg@50": 0.25})
    return pb.RoundMetrics(
        round=round_index, valid={"ndcg@10": valid_ndcg}, test=test, valid_loss=1.0
    )


def _record() -> DomainRecord:
    record = DomainRecord(stats=pb.DomainStats(n_users=5, n_items=7, n_interactions=40))
    record.reports["federated"] = {
        0: _metrics(0, 0.1, 0.10),
        1: _metrics(1, 0.3, 0.20),
        2: _metrics(2, 0.3, 0.40),
        3: _metrics(3, 0.2, 0.90),
    }
    record.reports["local_only"] = {0: _metrics(0, 0.1, 0.05), 1: _metrics(1, 0.2, 0.1)}
    return record


def test_best_round_takes_highest_validation_earliest_on_tie():
    assert best_round(_record().reports["federated"]).round == 1


def test_best_round_rejects_empty_history():
    with pytest.raises(ValueError, match="no round"):
        best_round({})


def test_summarize_reports_test_metrics_at_best_round():
    summary = summarize({"books": _record()})

    assert summary["books"]["users"] == 5
    assert summary["books"]["federated"]["best_round"] == 1
    assert summary["books"]["federated"]["ndcg@10"] == pytest.approx(0.2)
    assert summary["books"]["local_only"]["ndcg@10"] == pytest.approx(0.1)


def test_format_table_shows_gain_over_local_only():
    table = format_table(summarize({"books": _record()}))

    assert "books" in table
    assert "+100.0%" in table


def test_write_reports_writes_three_files(tmp_path):
    write_reports(tmp_path, {"books": _record()})

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    history = json.loads((tmp_path / "history.json").read_text())
    png = (tmp_path / "validation_ndcg.png").read_bytes()

    assert set(metrics["books"]["federated"]) >= {"recall@10", "ndcg@10", "recall@50"}
    assert [r["round"] for r in history["books"]["federated"]] == [0, 1, 2, 3]
    assert png.startswith(b"\x89PNG")
