"""Train RecBole's SASRec on one exported domain; print test metrics and epoch times.

This script runs in the separate RecBole environment (``make bench-recbole-env``
builds bench/.venv-recbole), never in fedcdr's own, because RecBole 1.2.1 needs
numpy<2. It imports nothing from fedcdr. ``bench.quality`` exports each domain's
sequences, with timestamps 1..n in our order, so RecBole's leave-one-out split
(order TO, split LS valid_and_test) gives the same validation and test targets.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

# RecBole 1.2.1 reloads its own checkpoints with torch.load, which torch >= 2.6
# restricts to weights unless this is set.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import torch  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.model.sequential_recommender import SASRec  # noqa: E402
from recbole.trainer import Trainer  # noqa: E402
from recbole.utils import init_seed  # noqa: E402


def build_config(args: argparse.Namespace) -> Config:
    """Build a SASRec config that matches fedcdr's model and split.

    Hidden size 64, 2 layers, 2 heads, inner size 256, input length 50, full
    softmax, and leave-one-out in the exported order with full ranking.
    """
    return Config(
        model="SASRec",
        dataset=args.domain,
        config_dict={
            "data_path": str(args.data_root),
            "checkpoint_dir": str(args.checkpoints),
            "use_gpu": False,
            "seed": args.seed,
            "state": "WARNING",
            "show_progress": False,
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "user_inter_num_interval": "[0,inf)",
            "item_inter_num_interval": "[0,inf)",
            "MAX_ITEM_LIST_LENGTH": 50,
            "hidden_size": 64,
            "inner_size": 256,
            "n_layers": 2,
            "n_heads": 2,
            "hidden_dropout_prob": args.dropout,
            "attn_dropout_prob": args.dropout,
            "loss_type": "CE",
            "train_neg_sample_args": None,
            "epochs": args.epochs,
            "train_batch_size": args.batch_size,
            "learning_rate": 0.001,
            "stopping_step": 10,
            "eval_args": {
                "split": {"LS": "valid_and_test"},
                "order": "TO",
                "group_by": "user",
                "mode": "full",
            },
            "metrics": ["Recall", "NDCG"],
            "topk": [10, 50],
            "valid_metric": "NDCG@10",
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-root",
        type=Path,
        required=True,
        help="folder of <domain>/<domain>.inter",
    )
    parser.add_argument("--domain", required=True)
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--epochs",
        type=int,
        default=100,
        help="maximum epochs; early stopping after 10 without gain",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    config = build_config(args)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = SASRec(config, train_data._dataset).to(config["device"])
    # Importing RecBole's models switches autograd anomaly detection on for the
    # whole process (recbole/model/sequential_recommender/sine.py), which slows
    # every backward pass.
    torch.autograd.set_detect_anomaly(False)
    trainer = Trainer(config, model)

    epoch_times: list[float] = []
    train_epoch = trainer._train_epoch

    def timed_epoch(*args, **kwargs):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        result = train_epoch(*args, **kwargs)
        epoch_times.append(time.perf_counter() - started)
        return result

    trainer._train_epoch = timed_epoch
    trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)

    rows = len(train_data._dataset)
    median = statistics.median(epoch_times)
    print(
        json.dumps(
            {
                "domain": args.domain,
                "seed": args.seed,
                "rows": rows,
                "epochs_run": len(epoch_times),
                "epoch_s": median,
                "rows_per_s": rows / median,
                "best_valid_ndcg@10": float(trainer.best_valid_score),
                "test": {key.lower(): float(value) for key, value in test.items()},
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
