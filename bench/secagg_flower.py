"""Time Flower's SecAgg+ client mask step; runs in the separate Flower environment.

This module imports only flwr and NumPy, because it runs under
bench/.venv-flwr/bin/python, which has neither fedcdr nor its pinned packages.
It prints one JSON object. The timed step is what the SecAgg+ client of
flwr 1.42.0 (secaggplus_mod) does to an update between receiving the shares
and uploading. It scales the update by the weight and quantizes it. It adds a
self mask and one pairwise mask per peer, each drawn from NumPy's MT19937
generator seeded from a seed or an ECDH key agreement, and reduces mod 2**32.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
    generate_shared_key,
)
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_combine,
    parameters_addition,
    parameters_mod,
    parameters_multiply,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import quantize
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
from flwr.supercore.primitives.asymmetric import generate_key_pairs

# Defaults of flwr.server.workflow.SecAggPlusWorkflow in flwr 1.42.0.
CLIPPING_RANGE = 8.0
QUANTIZATION_RANGE = 4194304
MODULUS_RANGE = 4294967296
MAX_WEIGHT = 1000


def mask_step(
    update: np.ndarray, peers: int, weight: int, seed: bytes
) -> tuple[list[np.ndarray], float]:
    """Mask ``update`` as one Flower SecAgg+ client with ``peers`` neighbours."""
    own_private, _ = generate_key_pairs()
    peer_publics = [generate_key_pairs()[1] for _ in range(peers)]

    # CPU time of this thread, as for fedcdr's side of the comparison.
    start = time.thread_time()
    ratio = round(weight / MAX_WEIGHT * QUANTIZATION_RANGE)
    parameters = parameters_multiply([update], ratio / QUANTIZATION_RANGE)
    quantized = factor_combine(
        ratio, quantize(parameters, CLIPPING_RANGE, QUANTIZATION_RANGE)
    )
    shapes = [array.shape for array in quantized]
    quantized = parameters_addition(
        quantized, pseudo_rand_gen(seed, MODULUS_RANGE, shapes)
    )
    for index, public in enumerate(peer_publics):
        shared = generate_shared_key(own_private, public)
        mask = pseudo_rand_gen(shared, MODULUS_RANGE, shapes)
        combine = parameters_addition if index % 2 else parameters_subtraction
        quantized = combine(quantized, mask)
    quantized = parameters_mod(quantized, MODULUS_RANGE)
    return quantized, time.thread_time() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.secagg_flower")
    parser.add_argument("--length", type=int, required=True, help="update length")
    parser.add_argument("--peers", type=int, required=True, help="pairwise masks")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes")
    args = parser.parse_args(argv)

    import flwr

    rng = np.random.default_rng(0)
    update = rng.uniform(-0.009, 0.009, args.length).astype(np.float32)
    seconds = []
    for repeat in range(args.repeats):
        masked, elapsed = mask_step(update, args.peers, 60, repeat.to_bytes(32, "big"))
        seconds.append(elapsed)
    uploaded = sum(array.nbytes for array in masked)
    json.dump(
        {
            "flwr_version": flwr.__version__,
            "seconds": seconds,
            "masked_dtype": str(masked[0].dtype),
            "masked_bytes": uploaded,
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
