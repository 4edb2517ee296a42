"""Pairing graphs of secure aggregation (complete or SecAgg+ k-regular) and thresholds.

Bonawitz et al. (CCS 2017) pair every client with every other, which costs
O(n) masks and shares per client. SecAgg+ (Bell et al., CCS 2020) pairs each
client only with its k neighbours in a k-regular graph, so a client's shares go
to its neighbourhood and the threshold applies per neighbourhood. This module
builds a circulant graph over an order of the clients that depends on the run
and round, so every party derives the same graph from public values.
"""

from __future__ import annotations

import hashlib

from common.secagg.keys import encode_fields, round_salt

ACTIVE = "active"
HONEST_BUT_CURIOUS = "honest-but-curious"
MODES = (ACTIVE, HONEST_BUT_CURIOUS)


def neighbourhoods(
    domains: list[str], k: int, run_id: str, round_index: int
) -> dict[str, tuple[str, ...]]:
    """Return each domain's neighbours, itself excluded, sorted by name.

    Parameters
    ----------
    domains
        Distinct names of the clients that advertised keys.
    k
        Neighbours per client: 0, or at least ``len(domains) - 1``, gives the
        complete graph. Otherwise it must be even, and each client is joined
        to the k/2 clients on either side of it in a ring whose order is a
        hash of the run, round and name.

    Raises
    ------
    ValueError
        When ``k`` is negative or odd, or ``domains`` repeats a name.
    """
    if len(set(domains)) != len(domains):
        raise ValueError(f"domains must be distinct, got {sorted(domains)}")
    if k < 0 or k % 2:
        raise ValueError(
            f"secagg.neighbours must be 0 (every client) or a positive even "
            f"number, got {k}"
        )
    if k == 0 or k >= len(domains) - 1:
        return {d: tuple(sorted(set(domains) - {d})) for d in domains}

    salt = round_salt(run_id, round_index)
    ring = sorted(
        domains,
        key=lambda d: hashlib.sha256(encode_fields(salt, d.encode())).digest(),
    )
    n = len(ring)
    result = {}
    for position, domain in enumerate(ring):
        peers = {ring[(position + offset) % n] for offset in range(1, k // 2 + 1)}
        peers |= {ring[(position - offset) % n] for offset in range(1, k // 2 + 1)}
        result[domain] = tuple(sorted(peers))
    return result


def minimum_threshold(n: int, mode: str) -> int:
    """Return the smallest threshold that ``mode`` allows for ``n`` share holders.

    Honest-but-curious needs t > n/2 and active needs t > 2n/3, so that the
    coordinator cannot collect both kinds of share of one client.
    """
    _check_mode(mode)
    if n < 1:
        raise ValueError(f"the number of share holders must be positive, got {n}")
    return n // 2 + 1 if mode == HONEST_BUT_CURIOUS else 2 * n // 3 + 1


def check_threshold(threshold: int, n: int, mode: str) -> None:
    """Raise ValueError unless ``threshold`` is safe for ``n`` holders in ``mode``."""
    lowest = minimum_threshold(n, mode)
    if threshold < lowest:
        rule = "n/2" if mode == HONEST_BUT_CURIOUS else "2n/3"
        raise ValueError(
            f"threshold {threshold} is too low for {n} share holders in {mode} "
            f"mode: it must exceed {rule}, so at least {lowest}; raise "
            "secagg.threshold or set it to 0 for the smallest safe value"
        )
    if threshold > n:
        raise ValueError(
            f"threshold {threshold} exceeds the {n} share holders, so no secret "
            "could be rebuilt; lower secagg.threshold or set it to 0"
        )


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"secagg.mode must be one of {MODES}, got {mode!r}")
