"""A tiny trained domain model on generated data, saved as `fedcdr-client run` saves it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from client.data import load_domain, split_leave_one_out
from client.itemcodes import embed_items, train_local_codebook
from client.session import ITEM_IDS_KEY, MODEL_FILE, DomainModel, item_code_table
from common.config import ModelConfig, PromptConfig, TrainConfig

DOMAIN = "shop"
N_ITEMS = 20
N_USERS = 30
ITEMS_PER_USER = 7
# Shorter than a user's history, so ranking must truncate as training does.
CONFIG = ModelConfig(
    hidden_size=16,
    n_layers=1,
    n_heads=2,
    inner_size=32,
    max_seq_len=5,
    n_prompt_words=2,
    n_subspaces=4,
    n_centroids=8,
    text_dim=384,
)
GENRES = ("garden tools", "kitchen knives", "board games", "rain jackets")


@dataclass(frozen=True)
class TinyDomain:
    """Paths of a generated domain and its saved model."""

    data_dir: Path
    work_dir: Path
    config_file: Path

    @property
    def model_file(self) -> Path:
        return self.work_dir / MODEL_FILE

    @property
    def item_file(self) -> Path:
        return self.data_dir / f"{DOMAIN}.item.csv"


def write_domain(data_dir: Path) -> None:
    """Write 20 items and 30 users with 7 interactions each; all survive 5-core."""
    data_dir.mkdir(parents=True, exist_ok=True)
    items = ["item_id,title"]
    for i in range(1, N_ITEMS + 1):
        items.append(f"{100 + i},Product {i} from the {GENRES[i % len(GENRES)]} aisle")
    (data_dir / f"{DOMAIN}.item.csv").write_text("\n".join(items) + "\n")
    rows = ["user_id,item_id,timestamp"]
    for user in range(N_USERS):
        for step in range(ITEMS_PER_USER):
            item = (user + 3 * step) % N_ITEMS + 1
            rows.append(f"u{user},{100 + item},{1000 + 10 * step}")
    (data_dir / f"{DOMAIN}.inter.csv").write_text("\n".join(rows) + "\n")


def write_client_config(path: Path, data_dir: Path, work_dir: Path, tls: str) -> None:
    """Write a client.toml; ``tls`` is the body of its [tls] table."""
    path.write_text(
        f'domain = "{DOMAIN}"\n'
        f'data_dir = "{data_dir}"\n'
        f'work_dir = "{work_dir}"\n'
        "threads = 1\n"
        f"\n[tls]\ninsecure = true\n\n[serve]\n{tls}"
    )


def train_tiny_domain(root: Path, seed: int = 0) -> TinyDomain:
    """Generate the domain, train briefly with prompts, and save the model file.

    The embedding cache lands in ``work_dir/cache`` as in a real run, and the
    domain prompt and user prompt are both active in the saved model.
    """
    data_dir, work_dir = root / "data", root / "work"
    write_domain(data_dir)
    data = load_domain(data_dir)
    embeddings = embed_items(data.item_texts, work_dir / "cache")
    centroids = train_local_codebook(
        embeddings, CONFIG.n_subspaces, CONFIG.n_centroids, 3, seed
    )
    torch.manual_seed(seed)
    state = DomainModel(
        CONFIG,
        TrainConfig(batch_size=8, learning_rate=0.01),
        split_leave_one_out(data),
        item_code_table(embeddings, centroids),
        seed,
        PromptConfig(epochs=1, learning_rate=0.01),
    )
    for _ in range(2):
        state.train_round()
    state.tune_prompts(2)
    state.model.set_prompt_active(True)
    metadata = {
        "domain": DOMAIN,
        "run_id": "tiny",
        ITEM_IDS_KEY: json.dumps(data.item_ids),
    }
    extra = {"codebook.centroids": torch.from_numpy(np.asarray(centroids))}
    state.keep_if_best(state.evaluate(2), work_dir / MODEL_FILE, metadata, extra)
    config_file = root / "client.toml"
    write_client_config(config_file, data_dir, work_dir, "")
    return TinyDomain(data_dir, work_dir, config_file)
