"""A domain's model across rounds: load global weights, train, evaluate, save."""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as save_safetensors

from client.data import Split
from client.itemcodes import assign_codes
from client.train import evaluate, make_optimizer, train_epochs
from common.atomic import write_bytes_atomic
from common.config import ModelConfig, TrainConfig
from common.model import (
    SequenceRecommender,
    global_parameter_names,
    global_state_dict,
    load_global_state_dict,
)
from common.pb import federation_pb2 as pb

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"


def domain_seed(run_seed: int, domain: str, client_seed: int = 0) -> int:
    """Derive a domain's local seed from the run seed and the domain name."""
    return (run_seed * 1_000_003 + zlib.crc32(domain.encode()) + client_seed) % 2**31


def item_code_table(embeddings: np.ndarray, centroids: np.ndarray) -> torch.Tensor:
    """Quantize item embeddings into the [N+1, D] code table, row 0 = padding."""
    codes = assign_codes(embeddings, centroids)
    table = np.zeros((codes.shape[0] + 1, codes.shape[1]), dtype=np.int64)
    table[1:] = codes
    return torch.from_numpy(table)


@dataclass
class Evaluation:
    """Validation and test results of one model state."""

    round: int
    valid: dict[str, float]
    test: dict[str, float]
    valid_loss: float
    train_loss: float

    def to_proto(self) -> pb.RoundMetrics:
        return pb.RoundMetrics(
            round=self.round,
            valid=self.valid,
            test=self.test,
            valid_loss=self.valid_loss,
            train_loss=self.train_loss,
        )


class DomainModel:
    """The domain's recommender, its optimizer and its best checkpoint so far.

    The optimizer state carries over from round to round, as in continuous
    local training; only the global part's weights are replaced by the
    coordinator's.
    """

    def __init__(
        self,
        model_config: ModelConfig,
        train_config: TrainConfig,
        split: Split,
        item_codes: torch.Tensor,
        seed: int,
    ) -> None:
        self.model_config = model_config
        self.train_config = train_config
        self.split = split
        torch.manual_seed(seed)
        self.model = SequenceRecommender(model_config, item_codes)
        self.optimizer = make_optimizer(self.model, train_config)
        self.generator = torch.Generator().manual_seed(seed)
        self.names = global_parameter_names(model_config)
        self.last_train_loss = float("nan")
        self.best: Evaluation | None = None

    def load_global(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace the global part with the downloaded ``model/<name>`` arrays."""
        state = {
            name: torch.from_numpy(arrays[f"model/{name}"].astype(np.float32))
            for name in self.names
            if f"model/{name}" in arrays
        }
        load_global_state_dict(self.model, state)

    def train_round(self) -> np.ndarray:
        """Train the local epochs of one round and return the upload vector.

        Returns
        -------
        numpy.ndarray
            float64 ``[n_global_values + 1]``: the global part's delta multiplied
            by the number of training sequences n, followed by n itself, so the
            coordinator's sum divided by its last element is the FedAvg mean.
        """
        before = global_state_dict(self.model)
        self.last_train_loss = train_epochs(
            self.model,
            self.split.train,
            self.train_config,
            self.optimizer,
            self.train_config.local_epochs,
            self.generator,
        )
        after = global_state_dict(self.model)
        weight = float(len(self.split.train))
        parts = [
            (after[name] - before[name]).double().flatten().numpy() * weight
            for name in self.names
        ]
        return np.concatenate([*parts, np.array([weight])])

    def evaluate(self, round_index: int) -> Evaluation:
        """Evaluate on validation and test cases, full ranking over all items."""
        max_len = self.model_config.max_seq_len
        valid = evaluate(self.model, self.split.valid, max_len)
        test = evaluate(self.model, self.split.test, max_len)
        return Evaluation(
            round=round_index,
            valid=valid.metrics,
            test=test.metrics,
            valid_loss=valid.loss,
            train_loss=self.last_train_loss,
        )

    def keep_if_best(
        self,
        result: Evaluation,
        path: Path | None,
        metadata: dict[str, str],
        extra: dict[str, torch.Tensor] | None = None,
    ) -> bool:
        """Save the model to ``path`` when ``result`` has the best validation NDCG@10.

        ``extra`` tensors (the codebook centroids) are saved beside the weights.
        """
        if (
            self.best is not None
            and result.valid["ndcg@10"] <= self.best.valid["ndcg@10"]
        ):
            return False
        self.best = result
        if path is not None:
            info = {
                **metadata,
                "round": str(result.round),
                "valid": json.dumps(result.valid),
            }
            tensors = {k: v.contiguous() for k, v in self.model.state_dict().items()}
            tensors.update(extra or {})
            data = save_safetensors(tensors, metadata=info)
            write_bytes_atomic(path, data)
            logger.info("round=%d saved best model to %s", result.round, path)
        return True
