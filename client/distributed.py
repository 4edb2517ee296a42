"""Data-parallel local training of one domain across processes (torchrun, gloo).

A domain too large for one machine starts its client with ``torchrun``. Rank 0
is the domain client: it alone talks to the coordinator. Before each training
round it sends a command to the other ranks through the rendezvous store and
broadcasts the global weights. Then every rank trains under
DistributedDataParallel on its own rows of each batch.

All ranks shuffle with the same generator, so they see the same batches in the
same order, and rank r takes the r-th of ``world_size`` near-equal blocks of
rows. Each rank scales its loss so that the averaged gradient is the gradient
of the mean loss over the whole batch. With ``model.dropout == 0`` the update of
a round therefore equals the single-process update up to floating-point
rounding. With dropout, each rank draws its own masks, so the update has the
same distribution but not the same values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from client.driver import DomainClient
from client.session import DomainModel
from client.split import Split
from common.config import (
    ClientConfig,
    DistributedConfig,
    ModelConfig,
    PromptConfig,
    TrainConfig,
)
from common.model import SequenceRecommender
from common.pb import federation_pb2 as pb

logger = logging.getLogger(__name__)

COMMAND_PREFIX = "command/"


class DistributedError(RuntimeError):
    """Another rank failed, timed out or disagrees with this one."""


def ranks_from_environment(environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """Return ``(RANK, WORLD_SIZE)`` as torchrun sets them, ``(0, 1)`` when unset.

    Raises
    ------
    DistributedError
        If a variable is not a whole number, or RANK is not below WORLD_SIZE.
    """
    environ = os.environ if environ is None else environ
    values = {}
    for name, default in (("RANK", "0"), ("WORLD_SIZE", "1")):
        text = environ.get(name, default)
        try:
            values[name] = int(text)
        except ValueError:
            raise DistributedError(
                f"environment variable {name} must be a whole number, got {text!r}; "
                "start the client with torchrun or unset it"
            ) from None
    rank, world_size = values["RANK"], values["WORLD_SIZE"]
    if world_size < 1 or not 0 <= rank < world_size:
        raise DistributedError(
            f"RANK = {rank} and WORLD_SIZE = {world_size} are invalid: WORLD_SIZE "
            "must be positive and RANK from 0 to WORLD_SIZE - 1; start the client "
            "with torchrun or unset both"
        )
    return rank, world_size


@dataclass
class RankGroup:
    """This process's place among the ranks of one domain client.

    ``store`` is the rendezvous store, through which rank 0 sends commands, so
    that sending a command does not wait for the other ranks to receive it. Tensors travel through the
    default gloo process group, whose collectives time out after
    ``config.timeout_s``.
    """

    rank: int
    world_size: int
    store: dist.Store
    config: DistributedConfig
    sent: int = 0
    stopped: bool = False

    def send_command(self, command: dict[str, Any]) -> None:
        """Publish the next command to the other ranks (rank 0 only)."""
        key = f"{COMMAND_PREFIX}{self.sent}"
        self.sent += 1
        self.store.set(key, json.dumps(command))

    def receive_command(self) -> dict[str, Any]:
        """Wait for rank 0's next command, at most ``config.idle_timeout_s``."""
        key = f"{COMMAND_PREFIX}{self.sent}"
        self.sent += 1
        try:
            self.store.wait([key], timedelta(seconds=self.config.idle_timeout_s))
            command: dict[str, Any] = json.loads(self.store.get(key))
        except RuntimeError as error:
            raise DistributedError(
                f"rank {self.rank} received no command from rank 0 within "
                f"distributed.idle_timeout_s = {self.config.idle_timeout_s} s "
                f"({error}); check rank 0's log, and raise the timeout if rank 0 "
                "waits longer than that for the coordinator"
            ) from None
        return command

    def stop(self, reason: str, failed: bool = False) -> None:
        """Tell the other ranks to exit; later calls do nothing (rank 0 only)."""
        if self.stopped:
            return
        self.stopped = True
        try:
            self.send_command({"command": "stop", "reason": reason, "failed": failed})
        except RuntimeError as error:
            logger.warning("could not tell the other ranks to stop: %s", error)

    def broadcast(self, tensor: Tensor, description: str) -> None:
        """Overwrite ``tensor`` with rank 0's values, or raise DistributedError."""
        try:
            dist.broadcast(tensor, src=0)
        except RuntimeError as error:
            raise self.collective_error(f"broadcasting {description}", error) from None

    def collective_error(self, action: str, error: Exception) -> DistributedError:
        return DistributedError(
            f"rank {self.rank} of {self.world_size} failed while {action}: "
            f"{error}. Another rank exited or did not answer within "
            f"distributed.timeout_s = {self.config.timeout_s} s; check the logs of "
            "every rank and start all of them again"
        )


def join_ranks(
    config: ClientConfig, split: Split, init_method: str = "env://"
) -> RankGroup:
    """Start the gloo process group and check that every rank agrees.

    ``init_method`` is ``env://`` under torchrun. Tests pass a ``file://`` URL
    with ``rank`` and ``world_size`` in its query.

    Raises
    ------
    DistributedError
        If there are more ranks than training sequences, or the ranks differ in
        their configuration or data.
    """
    settings = config.distributed
    timeout = timedelta(seconds=settings.timeout_s)
    try:
        store, rank, world_size = next(dist.rendezvous(init_method, timeout=timeout))
    except RuntimeError as error:
        raise DistributedError(
            f"could not reach the rendezvous store of {init_method} within "
            f"distributed.timeout_s = {settings.timeout_s} s: {error}; check "
            "MASTER_ADDR and MASTER_PORT and that torchrun runs on the rendezvous host"
        ) from None
    sequences = sum(1 for sequence in split.train if len(sequence) >= 2)
    if world_size > sequences:
        raise DistributedError(
            f"torchrun started {world_size} ranks (WORLD_SIZE), but domain "
            f"{config.domain!r} has only {sequences} training sequences, so some "
            f"ranks would never train; start at most {sequences} ranks"
        )
    try:
        dist.init_process_group(
            settings.backend,
            store=store,
            rank=rank,
            world_size=world_size,
            timeout=timeout,
        )
    except RuntimeError as error:
        raise DistributedError(
            f"rank {rank} of {world_size} could not connect to the other ranks "
            f"within distributed.timeout_s = {settings.timeout_s} s: {error}; "
            "start every rank, and set GLOO_SOCKET_IFNAME to an interface that "
            "the ranks reach each other on"
        ) from None
    group = RankGroup(rank, world_size, dist.PrefixStore("fedcdr", store), settings)
    records = _all_gather_json(group, _agreement_record(config, split))
    _check_agreement(records)
    logger.info(
        "domain=%s rank=%d of world_size=%d joined the process group",
        config.domain,
        rank,
        world_size,
    )
    return group


def _agreement_record(config: ClientConfig, split: Split) -> dict[str, Any]:
    """Values every rank must share: configuration and a digest of the data."""
    usable = [sequence for sequence in split.train if len(sequence) >= 2]
    digest = hashlib.sha256(json.dumps(split.train).encode()).hexdigest()
    return {
        "domain": config.domain,
        "seed": config.seed,
        "distributed": dataclasses.asdict(config.distributed),
        "training_sequences": len(usable),
        "data_sha256": digest,
        "torch": torch.__version__,
    }


def _check_agreement(records: list[dict[str, Any]]) -> None:
    problems = []
    for rank, record in enumerate(records[1:], start=1):
        for key, value in record.items():
            if value != records[0][key]:
                problems.append(
                    f"rank {rank} has {key} = {value!r}, rank 0 has {records[0][key]!r}"
                )
    if problems:
        raise DistributedError(
            "the ranks disagree: "
            + "; ".join(problems)
            + ". Start every rank with the same client config file, the same "
            "fedcdr and torch versions, and an identical copy of the data folder"
        )


def _all_gather_json(group: RankGroup, value: Any) -> list[Any]:
    """Gather one JSON-serializable value from every rank, in rank order."""
    payload = torch.frombuffer(bytearray(json.dumps(value).encode()), dtype=torch.uint8)
    try:
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(group.world_size)]
        dist.all_gather(sizes, torch.tensor([payload.numel()]))
        longest = int(max(size.item() for size in sizes))
        padded = torch.zeros(longest, dtype=torch.uint8)
        padded[: payload.numel()] = payload
        gathered = [torch.zeros_like(padded) for _ in range(group.world_size)]
        dist.all_gather(gathered, padded)
    except RuntimeError as error:
        raise group.collective_error(
            "comparing configuration and data", error
        ) from None
    return [
        json.loads(bytes(chunk[: int(size.item())].tolist()))
        for chunk, size in zip(gathered, sizes, strict=True)
    ]


class _GlobalLoss(nn.Module):
    """The model's loss as ``forward``, with only the global part registered.

    DistributedDataParallel then averages the gradients of the global part
    alone. The local prompt is inactive during federated rounds, so it has no
    gradients to average, and the ``item_codes`` buffer is not part of it.
    """

    def __init__(self, model: SequenceRecommender) -> None:
        super().__init__()
        self.global_part = model.global_part
        # Held in a list, so that nn.Module does not register the whole model.
        self._model = [model]

    def forward(self, items: Tensor, targets: Tensor) -> Tensor:
        return self._model[0].loss(items, targets)


class ShardedLoss:
    """Loss of this rank's rows of each batch, scaled to the whole batch's mean.

    Rank r returns ``sum_r * world_size / positions``, where ``sum_r`` is the
    summed cross entropy of its rows and ``positions`` counts the whole batch's
    nonzero targets. DistributedDataParallel divides the summed gradients by
    ``world_size``, which gives the gradient of the whole batch's mean loss.
    """

    def __init__(self, model: SequenceRecommender, group: RankGroup) -> None:
        self.group = group
        try:
            # The wrapped module has no buffers, so DDP syncs none.
            self.ddp = DistributedDataParallel(_GlobalLoss(model))
        except RuntimeError as error:
            raise group.collective_error("building the model", error) from None

    def __call__(self, items: Tensor, targets: Tensor) -> Tensor:
        positions = int((targets != 0).sum())
        rows = torch.arange(items.shape[0]).tensor_split(self.group.world_size)
        mine = rows[self.group.rank]
        scale = self.group.world_size / positions
        if mine.numel() == 0:
            # A last batch smaller than world_size leaves this rank no rows. It
            # still joins the gradient all-reduce, with a zero-weighted row.
            mine = rows[0][:1]
            scale = 0.0
        share_items, share_targets = items[mine], targets[mine]
        own_positions = int((share_targets != 0).sum())
        loss: Tensor = self.ddp(share_items, share_targets)
        return loss * (own_positions * scale)

    def epoch_mean(self, total_loss: float, total_targets: int) -> float:
        summed = torch.tensor([total_loss], dtype=torch.float64)
        try:
            dist.all_reduce(summed)
        except RuntimeError as error:
            raise self.group.collective_error("summing the epoch loss", error) from None
        return float(summed.item()) / self.group.world_size / total_targets


class ShardedDomainModel(DomainModel):
    """A DomainModel whose rounds train on every rank of the group.

    All ranks build it from the same configs and seed, so their optimizers start
    equal and stay equal, because each step applies the same averaged gradients.
    Rank 0 keeps the single-process dropout generator, and rank r > 0 reseeds
    torch's default generator so that its dropout masks differ from rank 0's.
    """

    def __init__(
        self,
        group: RankGroup,
        model_config: ModelConfig,
        train_config: TrainConfig,
        split: Split,
        item_codes: Tensor,
        seed: int,
        prompt: PromptConfig | None = None,
    ) -> None:
        super().__init__(model_config, train_config, split, item_codes, seed, prompt)
        self.group = group
        if group.rank > 0:
            torch.manual_seed((seed + 1_000_003 * group.rank) % 2**31)
        self.share_loss = ShardedLoss(self.model, group)

    def train_round(
        self, on_epoch: Callable[[int, float], None] | None = None
    ) -> np.ndarray:
        """Bring every rank to rank 0's global weights, then train one round."""
        if self.group.rank == 0:
            self.group.send_command({"command": "train"})
        parameters = list(self.model.global_part.parameters())
        flat = torch.cat([p.detach().flatten() for p in parameters])
        self.group.broadcast(flat, "the global weights")
        with torch.no_grad():
            for parameter, values in zip(
                parameters, flat.split([p.numel() for p in parameters]), strict=True
            ):
                parameter.copy_(values.view_as(parameter))
        try:
            return super().train_round(on_epoch)
        except DistributedError:
            raise
        except RuntimeError as error:
            raise self.group.collective_error("training a round", error) from None


class DistributedDomainClient(DomainClient):
    """The domain client on rank 0: it trains each round with the other ranks.

    At the FINISH task, after the last training round, rank 0 sends the other
    ranks the stop command, so prompt tuning and the local-only baseline run on
    rank 0 alone.
    """

    def __init__(self, group: RankGroup, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group

    def run(self) -> None:
        try:
            super().run()
        except BaseException as error:
            self.group.stop(f"rank 0 stopped: {error}", failed=True)
            raise
        self.group.stop("the run finished")

    def _build_model(self, item_codes: Tensor) -> DomainModel:
        if self.group.stopped:
            return super()._build_model(item_codes)
        if self._privacy() is not None:
            # NOTE: DP-SGD clips each user's gradient before any averaging, which
            # the DistributedDataParallel all-reduce would have to respect.
            raise DistributedError(
                "this run trains with user-level DP-SGD ([dp] in the coordinator's "
                f"config), which fedcdr cannot yet split across {self.group.world_size} "
                "torchrun ranks; start this domain's client as one process "
                "(fedcdr-client run, without torchrun)"
            )
        model_config, train_config = self._configs()
        if train_config.batch_size < self.group.world_size:
            logger.warning(
                "domain=%s train.batch_size=%d is smaller than world_size=%d, so "
                "some ranks train on no rows of a batch",
                self.config.domain,
                train_config.batch_size,
                self.group.world_size,
            )
        return lead_build(
            self.group,
            model_config,
            train_config,
            self.inputs.split,
            item_codes,
            self.seed,
            self.config.prompt,
        )

    def _finish(self, task: pb.GetTaskResponse) -> None:
        # NOTE: evaluation, prompt tuning and the local-only baseline run on
        # rank 0 alone, so they take as long as in a single-process client.
        self.group.stop("the federated rounds are over")
        super()._finish(task)


def lead_build(
    group: RankGroup,
    model_config: ModelConfig,
    train_config: TrainConfig,
    split: Split,
    item_codes: Tensor,
    seed: int,
    prompt: PromptConfig,
) -> ShardedDomainModel:
    """Build the domain model on rank 0 and the same model on every other rank."""
    group.send_command(
        {
            "command": "build",
            "model": dataclasses.asdict(model_config),
            "train": dataclasses.asdict(train_config),
            "prompt": dataclasses.asdict(prompt),
            "seed": seed,
            "item_codes_shape": list(item_codes.shape),
        }
    )
    group.broadcast(item_codes, "the item codes")
    return ShardedDomainModel(
        group, model_config, train_config, split, item_codes, seed, prompt
    )


def serve_rank(group: RankGroup, split: Split) -> None:
    """Run rank r > 0: build and train on rank 0's commands until it sends stop.

    Raises
    ------
    DistributedError
        If rank 0 sends no command in time, a collective fails, or the commands
        arrive out of order.
    """
    model: ShardedDomainModel | None = None
    while True:
        command = group.receive_command()
        kind = command.get("command")
        if kind == "stop":
            log = logger.warning if command.get("failed") else logger.info
            log("rank=%d stopping: %s", group.rank, command.get("reason"))
            return
        if kind == "build":
            model = _build_from_command(group, split, command)
        elif kind == "train" and model is not None:
            model.train_round()
            logger.info(
                "rank=%d trained its rows of a round, train_loss=%.4f",
                group.rank,
                model.last_train_loss,
            )
        else:
            raise DistributedError(
                f"rank {group.rank} received command {kind!r} out of order; start "
                "every rank with the same fedcdr version"
            )


def _build_from_command(
    group: RankGroup, split: Split, command: dict[str, Any]
) -> ShardedDomainModel:
    item_codes = torch.zeros(command["item_codes_shape"], dtype=torch.long)
    group.broadcast(item_codes, "the item codes")
    return ShardedDomainModel(
        group,
        ModelConfig(**command["model"]),
        TrainConfig(**command["train"]),
        split,
        item_codes,
        command["seed"],
        PromptConfig(**command["prompt"]),
    )


def leave_ranks() -> None:
    """Destroy the process group, if one was started."""
    if dist.is_initialized():
        dist.destroy_process_group()
