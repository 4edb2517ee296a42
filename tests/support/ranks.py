"""One rank of a data-parallel domain model, run as its own process by the tests.

``python -m tests.support.ranks FOLDER RANK SCENARIO`` joins a 2-rank gloo group
through the file store ``FOLDER/store`` over 127.0.0.1. Rank 0 writes what it
computed to ``FOLDER/rank0.json``, and any rank that fails writes its error to
``FOLDER/error-RANK.txt``. Scenarios:

- ``match``: two rounds with new global weights between them.
- ``other-data``: rank 1 changes one training sequence.
- ``hold``: rank 0 builds the model, writes ``FOLDER/built``, waits for
  ``FOLDER/go`` and then trains, so the test can stop rank 1 in between.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from client.distributed import (
    DistributedError,
    join_ranks,
    lead_build,
    leave_ranks,
    serve_rank,
)
from client.session import DomainModel
from client.split import Split
from common.config import (
    ClientConfig,
    DistributedConfig,
    ModelConfig,
    PromptConfig,
    TLSConfig,
    TrainConfig,
)

MODEL = ModelConfig(
    hidden_size=16,
    n_layers=1,
    n_heads=2,
    inner_size=32,
    dropout=0.0,
    max_seq_len=8,
    n_prompt_words=2,
    prompt_heads=2,
    n_subspaces=4,
    n_centroids=8,
    text_dim=16,
)
# 11 sequences in batches of 5 leave a last batch of 1 row, so rank 1 gets none.
TRAIN = TrainConfig(local_epochs=2, batch_size=5, learning_rate=0.01)
PROMPT = PromptConfig(epochs=0, domain_prompt=True, user_prompt=True)
N_ITEMS = 20
SEED = 1234
TIMEOUT_S = 4.0


def make_split(n_users: int = 11) -> Split:
    """Build a small random split; the same on every call."""
    rng = random.Random(7)
    sequences = [
        tuple(rng.randint(1, N_ITEMS) for _ in range(rng.randint(4, 12)))
        for _ in range(n_users)
    ]
    return Split(
        train=tuple(seq[:-2] for seq in sequences),
        valid=tuple((seq[:-2], seq[-2]) for seq in sequences),
        test=tuple((seq[:-1], seq[-1]) for seq in sequences),
    )


def make_item_codes() -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    shape = (N_ITEMS + 1, MODEL.n_subspaces)
    codes = torch.randint(0, MODEL.n_centroids, shape, generator=generator)
    codes[0] = 0
    return codes


def next_global_weights(model: DomainModel) -> dict[str, np.ndarray]:
    """Return new global weights, as a coordinator would send after a round."""
    state = model.model.global_part.state_dict()
    return {
        f"model/{name}": (value * 0.9 + 0.01).numpy() for name, value in state.items()
    }


def run_single_process(split: Split) -> tuple[list[np.ndarray], float]:
    """Train the two rounds of the ``match`` scenario in this process."""
    model = DomainModel(MODEL, TRAIN, split, make_item_codes(), SEED, PROMPT)
    first = model.train_round()
    model.load_global(next_global_weights(model))
    second = model.train_round()
    return [first, second], model.last_train_loss


def client_config(folder: Path) -> ClientConfig:
    return ClientConfig(
        domain="books",
        data_dir=folder,
        tls=TLSConfig(insecure=True),
        distributed=DistributedConfig(timeout_s=TIMEOUT_S, idle_timeout_s=60.0),
    )


def _lead(folder: Path, group, split: Split, scenario: str) -> None:
    model = lead_build(group, MODEL, TRAIN, split, make_item_codes(), SEED, PROMPT)
    if scenario == "hold":
        (folder / "built").write_text("yes")
        while not (folder / "go").exists():
            time.sleep(0.05)
        started = time.monotonic()
        try:
            model.train_round()
        finally:
            (folder / "elapsed").write_text(str(time.monotonic() - started))
        return
    first = model.train_round()
    model.load_global(next_global_weights(model))
    second = model.train_round()
    group.stop("the test finished")
    result = {
        "vectors": [first.tolist(), second.tolist()],
        "train_loss": model.last_train_loss,
    }
    (folder / "rank0.json").write_text(json.dumps(result))


def main(folder: Path, rank: int, scenario: str) -> int:
    torch.set_num_threads(1)
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    split = make_split()
    if scenario == "other-data" and rank == 1:
        train = list(split.train)
        train[0] = (*train[0][:-1], train[0][-1] % N_ITEMS + 1)
        split = Split(train=tuple(train), valid=split.valid, test=split.test)
    url = f"file://{folder / 'store'}?rank={rank}&world_size=2"
    try:
        group = join_ranks(client_config(folder), split, url)
        if rank == 0:
            _lead(folder, group, split, scenario)
        else:
            serve_rank(group, split)
    except DistributedError as error:
        (folder / f"error-{rank}.txt").write_text(str(error))
        return 4
    finally:
        leave_ranks()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]))
