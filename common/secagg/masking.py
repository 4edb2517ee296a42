"""The masks of one client's input: a self mask and one pairwise mask per neighbour.

Client u uploads y_u = x_u + PRG(b_u) + sum_v s(u, v) PRG(s_uv) mod 2**32,
where v runs over u's neighbours that shared keys, s_uv is their X25519 shared
secret, and s(u, v) is +1 when u < v by name and -1 otherwise. Both members of
a pair derive the same key, so their pairwise masks cancel in the sum.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from common.secagg.keys import shared_secret
from common.secagg.prg import add_masks, mask_key

# Name of the single masked tensor: the whole upload vector.
MASKED_TENSOR = "update"


def pairwise_sign(domain: str, peer: str) -> int:
    """Return +1 when ``domain`` adds the pair's mask and -1 when it subtracts it."""
    return 1 if domain < peer else -1


def self_mask_key(seed: bytes, run_id: str, round_index: int) -> bytes:
    """Derive the AES key of a client's self mask from its seed b_u."""
    return mask_key(
        seed,
        run_id=run_id,
        round_index=round_index,
        purpose="self",
        pair=None,
        tensor=MASKED_TENSOR,
    )


def pairwise_mask_key(
    secret: bytes, domain: str, peer: str, run_id: str, round_index: int
) -> bytes:
    """Derive the AES key of the mask that ``domain`` and ``peer`` share."""
    return mask_key(
        secret,
        run_id=run_id,
        round_index=round_index,
        purpose="pairwise",
        pair=(domain, peer),
        tensor=MASKED_TENSOR,
    )


def mask_input(
    encoded: np.ndarray,
    *,
    domain: str,
    seed: bytes,
    mask_private: X25519PrivateKey,
    peer_publics: Mapping[str, bytes],
    run_id: str,
    round_index: int,
) -> np.ndarray:
    """Return a masked copy of a client's encoded input.

    Parameters
    ----------
    encoded
        uint32 ``[N]``, the output of :func:`common.secagg.vector.encode`.
    domain
        The client's domain name.
    seed
        The client's self-mask seed b_u, 32 bytes.
    mask_private
        The client's mask private key of this round.
    peer_publics
        Mask public key of every neighbour that shared keys (U2).
    run_id, round_index
        The run and aggregation round.
    """
    masks = [(self_mask_key(seed, run_id, round_index), 1)]
    for peer in sorted(peer_publics):
        secret = shared_secret(mask_private, peer_publics[peer])
        key = pairwise_mask_key(secret, domain, peer, run_id, round_index)
        masks.append((key, pairwise_sign(domain, peer)))
    masked = np.array(encoded, dtype=np.uint32, copy=True)
    add_masks(masked, masks)
    return masked
