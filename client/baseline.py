"""The local-only baseline: the same model and budget, trained by one domain alone."""

from __future__ import annotations

import logging

import numpy as np

from client.data import Split
from client.itemcodes import train_local_codebook
from client.session import DomainModel, Evaluation, item_code_table
from common.config import ModelConfig, TrainConfig

logger = logging.getLogger(__name__)


def train_local_only(
    embeddings: np.ndarray,
    split: Split,
    model_config: ModelConfig,
    train_config: TrainConfig,
    seed: int,
) -> list[Evaluation]:
    """Train without federation and return the evaluation after every round.

    The codebook comes from the same number of k-means iterations run on the
    domain's own item embeddings, and training runs the same rounds times local
    epochs as the federation, with one optimizer throughout. Round 0 is the
    untrained model.
    """
    centroids = train_local_codebook(
        embeddings,
        model_config.n_subspaces,
        model_config.n_centroids,
        train_config.kmeans_iterations,
        seed,
    )
    local = DomainModel(
        model_config, train_config, split, item_code_table(embeddings, centroids), seed
    )
    history = [local.evaluate(0)]
    for round_index in range(1, train_config.rounds + 1):
        local.train_round()
        history.append(local.evaluate(round_index))
        logger.info(
            "local-only round=%d valid_ndcg@10=%.4f",
            round_index,
            history[-1].valid["ndcg@10"],
        )
    return history
