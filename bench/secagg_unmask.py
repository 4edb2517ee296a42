"""Coordinator unmasking for many simulated clients, some dropped after sharing keys.

This module builds the inputs of :func:`server.unmask.remove_masks` directly
from the common.secagg primitives, without running a Participant per client.
The inputs are the mask key pairs, the self-mask seeds, the Shamir shares that
the survivors reveal, and the masked sum. Only the call to remove_masks is
timed.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from common.secagg.graph import minimum_threshold, neighbourhoods
from common.secagg.keys import generate_key_pair, private_key_bytes, shared_secret
from common.secagg.masking import pairwise_mask_key, pairwise_sign, self_mask_key
from common.secagg.prg import add_mask
from common.secagg.shamir import PRIME, SHARE_BYTES, split_secret
from server.unmask import MaskRemovalInputs, remove_masks

RUN_ID = "bench-unmask"
ROUND_INDEX = 1


@dataclass(frozen=True)
class UnmaskResult:
    """Times of remove_masks calls and the setting they ran in.

    ``seconds`` are CPU times of the calling thread, ``wall_seconds`` elapsed
    times of the same calls.
    """

    clients: int
    entries: int
    dropped: int
    neighbours: int
    threshold: int
    mode: str
    seconds: list[float]
    wall_seconds: list[float]
    setup_s: float
    correct: bool
    # Masks that remove_masks rebuilds: one per survivor, and one per pair of a
    # dropped client and a surviving neighbour.
    self_masks: int
    pairwise_masks: int

    @property
    def best_s(self) -> float:
        return min(self.seconds)


def _shares(
    secret: bytes, threshold: int, holder_ids: list[int], sparse: bool
) -> dict[int, bytes]:
    """Share ``secret`` among ``holder_ids`` so that any ``threshold`` rebuild it.

    With ``sparse``, the polynomial is s + c x^(threshold - 1) for a random
    nonzero c. It still has degree threshold - 1, so interpolation costs the
    coordinator exactly as much, but each share takes one modular power
    instead of threshold steps. This builds the complete graph of hundreds of
    clients in seconds. It is not a secure sharing.
    """
    if len(holder_ids) < threshold:
        raise ValueError(
            f"only {len(holder_ids)} share holders survive, fewer than the "
            f"threshold {threshold}; drop fewer clients or change the seed"
        )
    if not sparse:
        return split_secret(secret, threshold, holder_ids)
    value = int.from_bytes(secret, "big")
    coefficient = random.randrange(1, PRIME)
    return {
        x: ((value + coefficient * pow(x, threshold - 1, PRIME)) % PRIME).to_bytes(
            SHARE_BYTES, "big"
        )
        for x in holder_ids
    }


def build_inputs(
    clients: int, entries: int, dropped: int, neighbours: int, mode: str, seed: int
) -> tuple[np.ndarray, np.ndarray, MaskRemovalInputs]:
    """Return the masked sum, the expected unmasked sum and remove_masks' inputs."""
    domains = [f"c{index:04d}" for index in range(clients)]
    ids = {domain: index + 1 for index, domain in enumerate(domains)}
    hoods = neighbourhoods(domains, neighbours, RUN_ID, ROUND_INDEX)
    holders = len(hoods[domains[0]]) + 1
    threshold = minimum_threshold(holders, mode)
    sparse = holders > 100
    rng = np.random.default_rng(seed)
    random.seed(seed)
    dropped_domains = set(random.sample(domains, dropped))
    survivors = [d for d in domains if d not in dropped_domains]

    keys: dict[str, X25519PrivateKey] = {}
    publics: dict[str, bytes] = {}
    for domain in domains:
        keys[domain], publics[domain] = generate_key_pair()
    seeds = {domain: os.urandom(32) for domain in survivors}

    # What the survivors reveal: seed shares of survivors, key shares of the dropped.
    seed_shares = {}
    for owner in survivors:
        revealing = [ids[d] for d in (*hoods[owner], owner) if d not in dropped_domains]
        seed_shares[owner] = _shares(seeds[owner], threshold, revealing, sparse)
    key_shares = {}
    for owner in sorted(dropped_domains):
        revealing = [ids[d] for d in hoods[owner] if d not in dropped_domains]
        raw = private_key_bytes(keys[owner])
        key_shares[owner] = _shares(raw, threshold, revealing, sparse)

    # The masked sum: the inputs, each survivor's self mask, and the pairwise
    # masks between survivors and dropped neighbours, which do not cancel. The
    # pairwise keys come from the survivor's side of each exchange.
    inputs = rng.integers(0, 2**16, size=(len(survivors), entries), dtype=np.uint32)
    expected = inputs.sum(axis=0, dtype=np.uint32)
    masked = expected.copy()
    for owner in survivors:
        add_mask(masked, self_mask_key(seeds[owner], RUN_ID, ROUND_INDEX))
        for peer in hoods[owner]:
            if peer in dropped_domains:
                secret = shared_secret(keys[owner], publics[peer])
                key = pairwise_mask_key(secret, owner, peer, RUN_ID, ROUND_INDEX)
                add_mask(masked, key, pairwise_sign(owner, peer))

    removal = MaskRemovalInputs(
        run_id=RUN_ID,
        round_index=ROUND_INDEX,
        threshold=threshold,
        survivors=survivors,
        mask_public=publics,
        hoods=hoods,
        seed_shares=seed_shares,
        key_shares=key_shares,
    )
    return masked, expected, removal


def measure_unmask(
    clients: int,
    entries: int,
    dropped: int,
    neighbours: int,
    mode: str,
    repeats: int,
    seed: int = 0,
) -> UnmaskResult:
    """Build the inputs once, then time remove_masks ``repeats`` times."""
    start = time.perf_counter()
    masked, expected, inputs = build_inputs(
        clients, entries, dropped, neighbours, mode, seed
    )
    setup_s = time.perf_counter() - start

    survivors = set(inputs.survivors)
    pairwise_masks = sum(
        len(survivors.intersection(inputs.hoods[domain]))
        for domain in inputs.key_shares
    )

    seconds = []
    wall_seconds = []
    correct = True
    for _ in range(repeats):
        cpu_start = time.thread_time()
        wall_start = time.perf_counter()
        unmasked = remove_masks(masked, inputs)
        wall_seconds.append(time.perf_counter() - wall_start)
        seconds.append(time.thread_time() - cpu_start)
        correct = correct and bool(np.array_equal(unmasked, expected))
    return UnmaskResult(
        clients=clients,
        entries=entries,
        dropped=dropped,
        neighbours=neighbours,
        threshold=inputs.threshold,
        mode=mode,
        seconds=seconds,
        wall_seconds=wall_seconds,
        setup_s=setup_s,
        correct=correct,
        self_masks=len(survivors),
        pairwise_masks=pairwise_masks,
    )
