"""Removal of the masks from the sum of masked inputs, from revealed Shamir shares.

Each survivor u uploaded y_u = x_u + PRG(b_u) + sum_v s(u, v) PRG(s_uv) mod 2**32,
where v runs over u's neighbours that shared keys and s(u, v) is +1 when
u < v by name and -1 otherwise. Summed over the survivors, the pairwise masks
between two survivors cancel. Left over are each survivor's self mask and the
masks that survivors share with dropped clients. Both are rebuilt here and
subtracted in one pass over the sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import serialization

from common.secagg.keys import private_key_from_bytes, shared_secret
from common.secagg.masking import pairwise_mask_key, pairwise_sign, self_mask_key
from common.secagg.prg import add_masks
from common.secagg.shamir import ShareError, combine_many


@dataclass(frozen=True)
class MaskRemovalInputs:
    """What the coordinator knows after the unmask stage.

    Attributes
    ----------
    run_id, round_index
        The run and aggregation round the masks were derived for.
    threshold
        Shares needed to rebuild one secret.
    survivors
        Domains whose masked input is in the sum (U3).
    mask_public
        Advertised mask public key of every domain in U1.
    hoods
        Neighbours of every domain in U1.
    seed_shares
        For each survivor, its self-mask seed shares by share id.
    key_shares
        For each dropped domain, its mask private key shares by share id.
    """

    run_id: str
    round_index: int
    threshold: int
    survivors: list[str]
    mask_public: Mapping[str, bytes]
    hoods: Mapping[str, tuple[str, ...]]
    seed_shares: Mapping[str, Mapping[int, bytes]]
    key_shares: Mapping[str, Mapping[int, bytes]]


def remove_masks(masked_sum: np.ndarray, inputs: MaskRemovalInputs) -> np.ndarray:
    """Return the uint32 sum of the survivors' encoded inputs.

    Raises
    ------
    ShareError
        When a secret cannot be rebuilt, or a rebuilt mask key does not match
        the public key its owner advertised, which means a wrong share.
    ValueError
        When fewer than ``threshold`` shares of a secret were revealed.
    """
    survivors = set(inputs.survivors)
    dropped = sorted(inputs.key_shares)
    seeds = combine_many(
        [inputs.seed_shares[d] for d in inputs.survivors], inputs.threshold
    )
    keys = combine_many([inputs.key_shares[d] for d in dropped], inputs.threshold)

    # Self masks of the survivors.
    masks = [
        (self_mask_key(seed, inputs.run_id, inputs.round_index), 1) for seed in seeds
    ]

    # Pairwise masks between each dropped client and its surviving neighbours.
    for domain, raw_key in zip(dropped, keys, strict=True):
        private_key = private_key_from_bytes(raw_key)
        public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        if public != inputs.mask_public[domain]:
            raise ShareError(
                f"the mask key rebuilt for dropped domain {domain!r} does not match "
                "its advertised public key, so a revealed share is wrong"
            )
        for peer in inputs.hoods[domain]:
            if peer not in survivors:
                continue
            secret = shared_secret(private_key, inputs.mask_public[peer])
            key = pairwise_mask_key(
                secret, peer, domain, inputs.run_id, inputs.round_index
            )
            masks.append((key, pairwise_sign(peer, domain)))

    # One pass over the sum removes every mask.
    total = np.array(masked_sum, dtype=np.uint32, copy=True)
    add_masks(total, [(key, -sign) for key, sign in masks])
    return total
