"""Recommendations from a saved domain model: ranking, new items, errors and the CLI."""

import csv
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from client.data import load_domain, split_leave_one_out
from client.inference import ModelFileError
from client.itemcodes import assign_codes, embed_items
from client.main import EXIT_USAGE, main
from client.recommend import (
    Recommender,
    UnknownItemError,
    UnknownUserError,
    open_recommender,
)
from client.session import (
    ITEM_IDS_KEY,
    DomainModel,
    item_code_table,
    load_saved_model,
)
from common.config import TrainConfig
from tests.support.tinymodel import CONFIG, N_ITEMS, TinyDomain


@pytest.fixture(scope="module")
def recommender(tiny_domain: TinyDomain) -> Recommender:
    return _open(tiny_domain)


def _open(domain: TinyDomain, model: Path | None = None) -> Recommender:
    return open_recommender(
        model or domain.model_file, domain.data_dir, domain.work_dir / "cache"
    )


def _copy(domain: TinyDomain, target: Path) -> TinyDomain:
    shutil.copytree(domain.data_dir, target / "data")
    shutil.copytree(domain.work_dir, target / "work")
    return TinyDomain(target / "data", target / "work", domain.config_file)


def _direct_top_k(domain: TinyDomain, user: str, k: int, include_seen: bool):
    """Rank with the saved model's own scores, the path that evaluation uses."""
    model, _ = load_saved_model(domain.model_file)
    data = load_domain(domain.data_dir, max_seq_len=1000)
    sequence = data.sequences[data.user_ids.index(user)]
    items = torch.tensor([sequence[-CONFIG.max_seq_len :]])
    with torch.no_grad():
        scores = model.scores(model.last_output(items, torch.tensor([items.shape[1]])))
    if not include_seen:
        scores[0, list(sequence)] = float("-inf")
    values, indices = torch.topk(scores[0], k)
    return [data.item_ids[i - 1] for i in indices.tolist()], values.tolist()


@pytest.mark.parametrize("include_seen", [False, True])
def test_recommend_matches_direct_scores(tiny_domain, recommender, include_seen):
    for user in ("u0", "u7", "u29"):
        result = recommender.for_user(user, 5, include_seen)
        ids, scores = _direct_top_k(tiny_domain, user, 5, include_seen)

        assert [item.item_id for item in result.items] == ids, user
        np.testing.assert_allclose([item.score for item in result.items], scores)
        assert [item.rank for item in result.items] == [1, 2, 3, 4, 5]


def test_recommend_excludes_seen_items(recommender):
    result = recommender.for_user("u4", N_ITEMS)
    seen = set(result.history)

    assert len(seen) == 7
    assert not seen & {item.item_id for item in result.items}
    assert len(result.items) == N_ITEMS - len(seen)


def test_recommend_keeps_seen_items_with_flag(recommender):
    result = recommender.for_user("u4", N_ITEMS, include_seen=True)

    assert set(result.history) <= {item.item_id for item in result.items}
    assert len(result.items) == N_ITEMS


def test_recommend_k_above_catalogue(recommender):
    unseen = recommender.for_user("u1", 1000)
    everything = recommender.for_user("u1", 1000, include_seen=True)

    assert len(unseen.items) == N_ITEMS - 7
    assert len(everything.items) == N_ITEMS
    assert [item.rank for item in everything.items] == list(range(1, N_ITEMS + 1))


def test_recommend_for_history(recommender):
    result = recommender.for_history(["101", "104", "107"], 3)

    assert result.user_id is None
    assert result.history == ("101", "104", "107")
    assert len(result.items) == 3
    assert not {"101", "104", "107"} & {item.item_id for item in result.items}


def test_recommend_unknown_user(recommender):
    with pytest.raises(UnknownUserError, match="'nobody' is not a user of domain"):
        recommender.for_user("nobody")


def test_recommend_unknown_history_item(recommender):
    with pytest.raises(UnknownItemError, match="item '999' of the history"):
        recommender.for_history(["101", "999"])


def test_recommend_empty_history_and_bad_k(recommender):
    with pytest.raises(ValueError, match="history is empty"):
        recommender.for_history([])
    with pytest.raises(ValueError, match="k must be at least 1, got 0"):
        recommender.for_user("u1", 0)


def test_new_item_recommendable_without_retraining(tiny_domain, tmp_path):
    domain = _copy(tiny_domain, tmp_path)
    model_digest = hashlib.sha256(domain.model_file.read_bytes()).hexdigest()
    text = "Product 21 from the kitchen knives aisle"
    with domain.item_file.open("a") as handle:
        handle.write(f"121,{text}\n")

    recommender = _open(domain)
    result = recommender.for_user("u2", 1000)
    from_new = recommender.for_history(["121"], 3)

    assert recommender.catalogue.n_new == 1
    assert "121" in [item.item_id for item in result.items]
    assert len(result.items) == N_ITEMS + 1 - 7
    assert from_new.history == ("121",)
    assert len(from_new.items) == 3
    centroids = safe_open(str(domain.model_file), "pt").get_tensor("codebook.centroids")
    embedding = embed_items([text], domain.work_dir / "cache")
    expected = assign_codes(embedding, centroids.numpy())[0]
    assert recommender.catalogue.codes[-1].tolist() == expected.tolist()
    assert recommender.catalogue.model_index[-1] == 0
    assert hashlib.sha256(domain.model_file.read_bytes()).hexdigest() == model_digest


def test_missing_model_file(tiny_domain, tmp_path):
    with pytest.raises(ModelFileError, match="not found; train the domain first"):
        _open(tiny_domain, tmp_path / "model.safetensors")


def test_model_file_not_safetensors(tiny_domain, tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_text("not a model")

    with pytest.raises(ModelFileError, match="cannot be read as a fedcdr model"):
        _open(tiny_domain, path)


def _rewrite_model(domain: TinyDomain, target: Path, **changes) -> Path:
    tensors = load_file(str(domain.model_file))
    with safe_open(str(domain.model_file), "pt") as handle:
        metadata = handle.metadata()
    tensors.update(changes)
    save_file(tensors, str(target), metadata=metadata)
    return target


def test_model_with_other_codebook_rejected(tiny_domain, tmp_path):
    rng = np.random.default_rng(5)
    other = torch.from_numpy(rng.standard_normal((4, 8, 96)).astype(np.float32))
    path = _rewrite_model(
        tiny_domain, tmp_path / "m.safetensors", **{"codebook.centroids": other}
    )

    with pytest.raises(ModelFileError, match="does not match its codebook"):
        _open(tiny_domain, path)


def test_model_with_wrong_codebook_shape_rejected(tiny_domain, tmp_path):
    path = _rewrite_model(
        tiny_domain,
        tmp_path / "m.safetensors",
        **{"codebook.centroids": torch.zeros(8, 8, 48)},
    )

    with pytest.raises(ModelFileError, match=r"codebook of shape \[8, 8, 48\]"):
        _open(tiny_domain, path)


def test_model_for_other_domain_rejected(tiny_domain, tmp_path):
    tensors = load_file(str(tiny_domain.model_file))
    with safe_open(str(tiny_domain.model_file), "pt") as handle:
        metadata = {**handle.metadata(), "domain": "books"}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata=metadata)

    with pytest.raises(ModelFileError, match="trained for domain 'books'"):
        _open(tiny_domain, path)


def test_model_without_item_ids_uses_data(tiny_domain, recommender, tmp_path):
    tensors = load_file(str(tiny_domain.model_file))
    with safe_open(str(tiny_domain.model_file), "pt") as handle:
        metadata = dict(handle.metadata())
    del metadata[ITEM_IDS_KEY]
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata=metadata)

    result = _open(tiny_domain, path).for_user("u6", 5)

    assert result == recommender.for_user("u6", 5)


def test_model_with_other_item_count_rejected(tiny_domain, tmp_path):
    tensors = load_file(str(tiny_domain.model_file))
    with safe_open(str(tiny_domain.model_file), "pt") as handle:
        metadata = {**handle.metadata(), ITEM_IDS_KEY: json.dumps(["101", "102"])}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata=metadata)

    with pytest.raises(ModelFileError, match="has 20 items, but its 'item_ids'"):
        _open(tiny_domain, path)


def test_model_for_other_encoder_rejected(tiny_domain, tmp_path):
    config = dataclasses.replace(CONFIG, text_dim=8)
    data = load_domain(tiny_domain.data_dir)
    rng = np.random.default_rng(2)
    centroids = rng.standard_normal((4, 8, 2)).astype(np.float32)
    codes = item_code_table(rng.standard_normal((N_ITEMS, 8)), centroids)
    state = DomainModel(config, TrainConfig(), split_leave_one_out(data), codes, 0)
    path = tmp_path / "m.safetensors"
    metadata = {"domain": "shop", ITEM_IDS_KEY: json.dumps(data.item_ids)}
    extra = {"codebook.centroids": torch.from_numpy(centroids)}
    state.keep_if_best(state.evaluate(0), path, metadata, extra)

    with pytest.raises(ModelFileError, match="expects 8-dimensional item embeddings"):
        _open(tiny_domain, path)


def test_cli_json_matches_recommender(tiny_domain, recommender, capsys):
    code = main(
        ["recommend", "--config", str(tiny_domain.config_file), "--user", "u3"]
        + ["-k", "4", "--format", "json"]
    )

    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == recommender.for_user("u3", 4).to_dict()


def test_cli_table_lists_items(tiny_domain, recommender, capsys):
    code = main(
        ["recommend", "--config", str(tiny_domain.config_file)]
        + ["--history", "101,102", "-k", "3"]
    )

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0] == "domain shop, history of 2 items: top 3"
    assert lines[1].split() == ["rank", "item_id", "text", "score"]
    best = recommender.for_history(["101", "102"], 3).items[0]
    assert lines[3].split()[:2] == ["1", best.item_id]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--user", "nobody"], "'nobody' is not a user"),
        (["--history", "101,,102"], "empty item id at position 2"),
        (["--history", "999"], "item '999' of the history"),
        (["--all"], "--all needs --out"),
        (["--all", "--out", "x.txt"], "must end in .csv or .parquet"),
        (["--user", "u1", "--model", "/nonexistent/m.safetensors"], "not found"),
    ],
)
def test_cli_errors_exit_usage(tiny_domain, caplog, capsys, arguments, message):
    code = main(["recommend", "--config", str(tiny_domain.config_file), *arguments])

    assert code == EXIT_USAGE
    assert message in caplog.text


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cli_exports_all_users(tiny_domain, recommender, tmp_path, suffix):
    out = tmp_path / f"recommendations{suffix}"

    code = main(
        ["recommend", "--config", str(tiny_domain.config_file), "--all"]
        + ["--out", str(out), "-k", "3", "--batch-size", "7"]
    )

    assert code == 0
    if suffix == ".csv":
        with out.open(newline="") as handle:
            rows = [
                (r["user_id"], int(r["rank"]), r["item_id"], float(r["score"]))
                for r in csv.DictReader(handle)
            ]
    else:
        table = pq.read_table(out).to_pydict()
        rows = list(
            zip(table["user_id"], table["rank"], table["item_id"], table["score"])
        )
    assert len(rows) == 30 * 3
    expected = recommender.for_user("u12", 3)
    exported = [row for row in rows if row[0] == "u12"]
    assert [row[2] for row in exported] == [i.item_id for i in expected.items]
    # Scoring 7 users in one batch may round differently from scoring one user,
    # and the CLI sets its own thread count, so scores match to float32 precision.
    assert [row[3] for row in exported] == pytest.approx(
        [i.score for i in expected.items], rel=1e-5
    )
    assert [row[1] for row in exported] == [1, 2, 3]
    assert not out.with_name(out.name + ".partial").exists()
