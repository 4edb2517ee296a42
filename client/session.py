"""A domain's model across rounds: load global weights, train, evaluate, save."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from client.data import Split
from client.itemcodes import assign_codes
from client.privacy import DomainPrivacy, PrivateTraining
from client.train import BatchShareLoss, evaluate, make_optimizer, train_epochs
from common.atomic import write_bytes_atomic
from common.config import ModelConfig, PromptConfig, TrainConfig
from common.model import (
    SequenceRecommender,
    global_parameter_names,
    global_state_dict,
    load_global_state_dict,
)
from common.pb import federation_pb2 as pb

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
# Metadata key of the JSON list of external item ids, in the model's item order
# (internal item i is entry i - 1), so recommendations can name the items.
ITEM_IDS_KEY = "item_ids"


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
    coordinator's. The prompt branches named by ``prompt`` are built at once but
    stay out of the output until ``tune_prompts`` activates them. With
    ``privacy``, the rounds train the global part with user-level DP-SGD (see
    :class:`client.privacy.PrivateTraining`).
    """

    def __init__(
        self,
        model_config: ModelConfig,
        train_config: TrainConfig,
        split: Split,
        item_codes: torch.Tensor,
        seed: int,
        prompt: PromptConfig | None = None,
        privacy: DomainPrivacy | None = None,
        domain: str = "",
    ) -> None:
        self.model_config = model_config
        self.train_config = train_config
        self.prompt_config = prompt or PromptConfig(
            epochs=0, domain_prompt=False, user_prompt=False
        )
        self.split = split
        torch.manual_seed(seed)
        self.model = SequenceRecommender(
            model_config,
            item_codes,
            domain_prompt=self.prompt_config.domain_prompt,
            user_prompt=self.prompt_config.user_prompt,
        )
        self.optimizer = make_optimizer(self.model, train_config)
        self.generator = torch.Generator().manual_seed(seed)
        self.names = global_parameter_names(model_config)
        self.last_train_loss = float("nan")
        # Set by client.distributed when several processes train each round.
        self.share_loss: BatchShareLoss | None = None
        self.best: Evaluation | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.private: PrivateTraining | None = None
        if privacy is not None:
            self.private = PrivateTraining(self.model, train_config, privacy, domain)

    def load_global(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace the global part with the downloaded ``model/<name>`` arrays."""
        state = {
            name: torch.from_numpy(arrays[f"model/{name}"].astype(np.float32))
            for name in self.names
            if f"model/{name}" in arrays
        }
        load_global_state_dict(self.model, state)

    def train_round(
        self, on_epoch: Callable[[int, float], None] | None = None
    ) -> np.ndarray:
        """Train the local epochs of one round and return the upload vector.

        ``on_epoch`` is called after each epoch with its number and mean loss.

        Returns
        -------
        numpy.ndarray
            float64 ``[n_global_values + 1]``: the global part's delta multiplied
            by the number of training sequences n, followed by n itself, so the
            coordinator's sum divided by its last element is the FedAvg mean.
            With domain-level noise, the clipped and noised delta followed by
            the weight 1 (see :meth:`PrivateTraining.noisy_update`).
        """
        before = global_state_dict(self.model)
        if self.private is not None:
            self.last_train_loss = self.private.train_round(
                self.model, self.split.train, self.generator
            )
        else:
            self.last_train_loss = train_epochs(
                self.model,
                self.split.train,
                self.train_config,
                self.optimizer,
                self.train_config.local_epochs,
                self.generator,
                share_loss=self.share_loss,
                on_epoch=on_epoch,
            )
        after = global_state_dict(self.model)
        if self.private is not None and self.private.adds_update_noise:
            delta = [
                (after[name] - before[name]).double().flatten().numpy()
                for name in self.names
            ]
            return self.private.noisy_update(np.concatenate(delta))
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

        The state is also kept in memory for ``restore_best``. ``extra`` tensors
        (the codebook centroids) are saved beside the weights, and the metadata
        records the ModelConfig and prompt branches that ``load_saved_model`` needs.
        """
        if (
            self.best is not None
            and result.valid["ndcg@10"] <= self.best.valid["ndcg@10"]
        ):
            return False
        self.best = result
        self.best_state = copy.deepcopy(self.model.state_dict())
        if path is not None:
            info = {
                **metadata,
                "round": str(result.round),
                "valid": json.dumps(result.valid),
                "model_config": json.dumps(dataclasses.asdict(self.model_config)),
                "domain_prompt": json.dumps(self.prompt_config.domain_prompt),
                "user_prompt": json.dumps(self.prompt_config.user_prompt),
            }
            tensors = {k: v.contiguous() for k, v in self.model.state_dict().items()}
            tensors.update(extra or {})
            data = save_safetensors(tensors, metadata=info)
            write_bytes_atomic(path, data)
            logger.info("round=%d saved best model to %s", result.round, path)
        return True

    def restore_best(self) -> None:
        """Load the state kept by the last successful ``keep_if_best``, if any."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    def tune_prompts(self, round_index: int) -> list[Evaluation]:
        """Train the local prompt on the pre-trained global part, keep the best epoch.

        Runs ``prompt.epochs`` epochs with AdamW at ``prompt.learning_rate`` over
        the local parameters, evaluating after each. The global groups named by
        ``prompt.finetune_global`` train as well, at
        ``prompt.finetune_learning_rate``, and the rest of the global part stays
        frozen. Candidate 0 is the current model with the prompt inactive, so the
        result never scores below it on validation NDCG@10. The model is left in
        the best candidate's state, with the global part trainable again.

        Returns
        -------
        list[Evaluation]
            One per candidate (0 = no prompt, e = after epoch e), each labelled
            ``round_index``. The best is ``max(..., key=valid ndcg@10)``, the
            earliest on ties.

        Raises
        ------
        ValueError
            If ``prompt.epochs`` is 0 or the model has no prompt branch.
        """
        epochs = self.prompt_config.epochs
        if epochs < 1 or self.model.local_part is None:
            raise ValueError(
                f"prompt tuning needs prompt.epochs >= 1 (got {epochs}) and a "
                "domain or user prompt; check the client's [prompt] settings"
            )
        self.model.set_prompt_active(False)
        history = [self.evaluate(round_index)]
        best_index, best_state = 0, copy.deepcopy(self.model.state_dict())

        # Freeze the global part so no step can change it, whatever the optimizer,
        # except the groups that prompt.finetune_global names.
        self.model.global_part.requires_grad_(False)
        self.model.set_prompt_active(True)
        optimizer = self._tuning_optimizer(self.model.local_part)
        try:
            for epoch in range(1, epochs + 1):
                self.last_train_loss = train_epochs(
                    self.model,
                    self.split.train,
                    self.train_config,
                    optimizer,
                    1,
                    self.generator,
                )
                history.append(self.evaluate(round_index))
                logger.info(
                    "prompt epoch=%d valid_ndcg@10=%.4f train_loss=%.4f",
                    epoch,
                    history[-1].valid["ndcg@10"],
                    self.last_train_loss,
                )
                if history[-1].valid["ndcg@10"] > history[best_index].valid["ndcg@10"]:
                    best_index = epoch
                    best_state = copy.deepcopy(self.model.state_dict())
        finally:
            self.model.global_part.requires_grad_(True)

        self.model.load_state_dict(best_state)
        logger.info("prompt tuning kept candidate=%d of %d", best_index, epochs)
        return history

    def _tuning_optimizer(self, local_part: torch.nn.Module) -> torch.optim.Optimizer:
        """Build AdamW over the local prompt and the fine-tuned global groups.

        Unfreezes the global groups of ``prompt.finetune_global``, and the caller
        must have frozen the rest. Each set gets its own learning rate.
        """
        config = self.prompt_config
        groups = [{"params": list(local_part.parameters()), "lr": config.learning_rate}]
        finetuned = [
            parameter
            for name, parameter in self.model.global_part.named_parameters()
            if name.split(".", 1)[0] in config.finetune_global
        ]
        if finetuned:
            for parameter in finetuned:
                parameter.requires_grad_(True)
            groups.append({"params": finetuned, "lr": config.finetune_learning_rate})
        return torch.optim.AdamW(groups, weight_decay=self.train_config.weight_decay)


def best_evaluation(history: list[Evaluation]) -> Evaluation:
    """Return the evaluation with the highest validation NDCG@10, earliest on ties."""
    return max(history, key=lambda result: result.valid["ndcg@10"])


def load_saved_model(path: Path) -> tuple[SequenceRecommender, dict[str, str]]:
    """Rebuild a model written by ``DomainModel.keep_if_best``.

    Returns
    -------
    (SequenceRecommender, dict[str, str])
        The model in eval mode, and the file's metadata.

    Raises
    ------
    ValueError
        If the file lacks the ``model_config`` metadata (written by an older
        fedcdr) or its tensors do not match that config.
    """
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
    if "model_config" not in metadata:
        raise ValueError(
            f"{path} has no model_config metadata, so the model cannot be rebuilt; "
            "save it again with this version of fedcdr"
        )
    config = ModelConfig(**json.loads(metadata["model_config"]))
    tensors = load_file(str(path))
    model = SequenceRecommender(
        config,
        tensors["item_codes"],
        domain_prompt=json.loads(metadata["domain_prompt"]),
        user_prompt=json.loads(metadata["user_prompt"]),
    )
    state = {k: v for k, v in tensors.items() if k in model.state_dict()}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{path} does not match its model_config: {error}") from None
    model.eval()
    return model, metadata
