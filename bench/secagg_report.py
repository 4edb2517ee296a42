"""Write the "Secure aggregation" section of docs/benchmarks.md from the results."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.secagg_mask import REFERENCE_CHUNK_WORDS
from common.secagg.prg import FUSED_CHUNK_WORDS

HEADING = "## Secure aggregation"
DOCS_TITLE = (
    "# Benchmarks\n\n"
    "Each section is written by the benchmark it names and gives the command, "
    "the machine and the date of its figures.\n"
)


def write_section(path: Path, results: dict[str, Any]) -> None:
    """Replace the section under HEADING in ``path``, or append it, keeping the rest."""
    replace_section(path, HEADING, render(results))


def replace_section(path: Path, heading: str, section: str) -> None:
    """Replace the ``heading`` section of ``path`` with ``section``, or append it."""
    text = path.read_text() if path.exists() else DOCS_TITLE
    start = text.find(heading + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        rest = text[end + 1 :] if end >= 0 else ""
        text = text[:start] + section + ("\n" + rest if rest else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _rate(words_per_s: float) -> str:
    return f"{words_per_s / 1e9:.2f} G words/s"


def render(results: dict[str, Any]) -> str:
    """Return the section as Markdown, every number taken from ``results``."""
    parts = [
        f"{HEADING}\n",
        _context(results),
        _table(results),
        _definitions(results),
        _mask_notes(results),
        _round_notes(results),
        _unmask_notes(results),
        _upload_notes(results),
        _flower_notes(results),
    ]
    return "\n".join(parts)


def _context(results: dict[str, Any]) -> str:
    machine = results["machine"]
    start = results["load_average_start"][0]
    end = results["load_average_end"][0]
    return (
        f"Measured by `{results['command']}` (`python -m bench.secagg`) on "
        f"{results['date']} in {results['elapsed_s']:.0f} s, on {machine['cpus']} "
        f"cores ({machine['cpu_model']}), Python {machine['python']}, NumPy "
        f"{machine['numpy']}, cryptography {machine['cryptography']} "
        f"({machine['openssl']}), grpcio {machine['grpcio']}. The raw results are "
        "in bench/results/secagg.json.\n\n"
        f"Other work shared the machine: the one-minute load average was {start:.1f} "
        f"at the start and {end:.1f} at the end, on 2 cores. Absolute times are "
        "therefore longer and noisier than on an idle machine. Each rate is the "
        "best of several passes in CPU time of the measuring thread, which "
        "leaves out the time that other processes held the core. The two sides "
        "of each ratio were measured alternately, so that a change of load "
        "affects both.\n"
    )


def _table(results: dict[str, Any]) -> str:
    figures = results["figures"]
    targets = results["targets"]
    complete = figures["unmask_500x100k_10pct_complete_graph_s"]
    flower = figures["flower_mask_step_over_fedcdr"]
    neighbours = results["unmask"]["secagg_plus"]["neighbours"]
    rows = [
        ("`mask_words_per_s`", _rate(figures["mask_words_per_s"]), ""),
        (
            "`aes_ctr_keystream_words_per_s`",
            _rate(figures["aes_ctr_keystream_words_per_s"]),
            "",
        ),
        (
            "mask rate / keystream rate",
            f"{figures['mask_over_keystream']:.2f}",
            targets["mask_over_keystream"],
        ),
        (
            "`secure_over_plain_round_ratio`",
            f"{figures['secure_over_plain_round_ratio']:.2f} "
            f"({figures['secure_round_median_s']:.2f} s / "
            f"{figures['plain_round_median_s']:.2f} s)",
            targets["secure_over_plain_round_ratio"],
        ),
        (
            "the same in CPU seconds of the coordinator and client processes",
            f"{figures['secure_over_plain_round_cpu_ratio']:.2f}",
            "",
        ),
        (
            f"`unmask_500x100k_10pct_s`, SecAgg+ with k = {neighbours}, CPU time",
            f"{figures['unmask_500x100k_10pct_s']:.2f} s",
            targets["unmask_500x100k_10pct_s"] + " s",
        ),
        (
            "the same, complete graph, CPU time",
            f"{complete:.2f} s" if complete is not None else "not run",
            "",
        ),
        (
            "`upload_bytes_over_float32`",
            f"{figures['upload_bytes_over_float32']:.4f}",
            targets["upload_bytes_over_float32"],
        ),
        (
            "Flower SecAgg+ mask step / fedcdr encode and mask",
            f"{flower:.1f}" if flower is not None else "not run",
            "",
        ),
    ]
    lines = ["| figure | measured | target |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {target} |" for name, value, target in rows]
    return "\n".join(lines) + "\n"


def _definitions(results: dict[str, Any]) -> str:
    mask = results["mask"]
    rounds = results["round"]
    secagg_plus = results["unmask"]["secagg_plus"]
    clients = rounds["real_clients"] + rounds["simulated_clients"]
    return (
        "### What each figure measures\n\n"
        f"- **Mask rate.** `common.secagg.prg.add_masks` adds {mask['masks']} masks "
        f"in one fused pass into one uint32 buffer of {mask['words']:,} words, "
        "on one thread, per CPU-second of that thread. The elapsed-time rates "
        f"were {_rate(mask['wall_mask_words_per_s'])} and "
        f"{_rate(mask['wall_aes_ctr_keystream_words_per_s'])}. The keystream rate is AES-128-CTR from the same "
        "`cryptography` library encrypting zeros with `update_into` into one "
        "reused, cache-sized output buffer, which is the most the library "
        "produces. The chunk sizes tried for it are "
        f"{', '.join(str(c) for c in REFERENCE_CHUNK_WORDS)} words and the faster "
        f"({mask['reference_chunk_words']}) counts.\n"
        f"- **Round.** One training task with a {rounds['length']:,}-value upload "
        "(the deltas and the client's weight), from the moment the coordinator "
        "publishes the task until it holds the float64 sum. "
        f"{clients} clients take part: {rounds['real_clients']} client processes "
        f"with one domain each and {rounds['simulated_clients']} simulated domains "
        "as threads of one more process. All of them run the real client code "
        "(`CoordinatorClient`, `PlainUpload`, `SecureUpload`) over gRPC with "
        "mutual TLS on a loopback port, against a real `Federation` and "
        "`CoordinatorServicer`. The coordinator runs with its default secure "
        "aggregation settings: active mode (signed keys and survivor lists), "
        "the complete graph and 2**16 levels. Local training is replaced by a "
        "fixed synthetic update, and the task has no model download, so the "
        "ratio isolates the cost of aggregation. A real round adds the same "
        "download and training time to both sides, which brings the ratio "
        "closer to 1. Plain and secure rounds alternate after one warm-up "
        f"round of each, and the figure is the median of {len(rounds['secure_s'])} "
        "secure rounds over the median of as many plain rounds. The CPU ratio "
        "divides the user and system CPU seconds that the coordinator process "
        "and the client processes used in those rounds, which depends less on "
        "the other load on the machine.\n"
        f"- **Unmask.** One call of `server.unmask.remove_masks` for "
        f"{secagg_plus['clients']} clients with {secagg_plus['entries']:,} entries, "
        f"{secagg_plus['dropped']} of which dropped after sharing keys, "
        f"{secagg_plus['mode']} mode. The call rebuilds the survivors' self-mask "
        "seeds and the dropped clients' mask keys from Shamir shares, checks each "
        "rebuilt key against its public key, and removes all masks. Building its "
        "inputs (keys, shares and the masked sum) is not timed. The result was "
        "checked to equal the sum of the survivors' inputs.\n"
        "- **Upload bytes.** The figure counts every request message that the "
        "first client process sent during its last secure round, each with its "
        "serialized size plus 5 bytes of gRPC framing. These are the "
        "advertisement, the share bundles, the masked input in its upload "
        "chunks, the survivor signature, the revealed shares and the stage "
        "polls. HTTP/2 and TLS framing are not counted. The figure divides the "
        "sum by 4 bytes times the update's values.\n"
    )


def _mask_notes(results: dict[str, Any]) -> str:
    mask = results["mask"]
    # JSON turns the integer chunk sizes into strings, so sort them as numbers.
    sweep = ", ".join(
        f"{chunk}: {_rate(rate)}"
        for chunk, rate in sorted(
            mask["chunk_sweep_words_per_s"].items(), key=lambda item: int(item[0])
        )
    )
    add = mask["add_only_words_per_s"]
    predicted = 1 / (1 / mask["aes_ctr_keystream_words_per_s"] + 1 / add)
    keystream = mask["aes_ctr_keystream_words_per_s"]
    return (
        "### Mask rate\n\n"
        "For each chunk of the buffer, add_masks sums every mask's keystream "
        "chunk into a cache-sized accumulator and then adds the accumulator to "
        f"the buffer once, so the {4 * mask['words'] / 1e6:.0f} MB buffer is read "
        "and written once for all masks. The additions alone, with the same "
        f"chunks, run at {_rate(add)}. If they did not overlap with the "
        f"keystream, add_masks would reach {_rate(predicted)}, or "
        f"{predicted / keystream:.2f} of the keystream rate; it measured "
        f"{mask['ratio']:.2f}. add_masks rates by chunk size in words: {sweep}. "
        f"The default chunk is {FUSED_CHUNK_WORDS} words.\n"
    )


def _round_notes(results: dict[str, Any]) -> str:
    rounds = results["round"]
    client = results["client_masking"]
    stages: dict[str, float] = {}
    for name in rounds["secure_stage_s"][0]:
        stages[name] = statistics.median(s[name] for s in rounds["secure_stage_s"])
    slowest = max(stages, key=lambda name: stages[name])
    listing = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in stages.items())
    clients = rounds["real_clients"] + rounds["simulated_clients"]
    cpu_s = clients * (client["encode_s"] + client["mask_s"])
    return (
        "### Round\n\n"
        f"Plain rounds took {_seconds(rounds['plain_s'])} and used "
        f"{_seconds(rounds['plain_cpu_s'])} of CPU time. Secure rounds took "
        f"{_seconds(rounds['secure_s'])} and used "
        f"{_seconds(rounds['secure_cpu_s'])} of CPU time. Median time per secure-aggregation "
        f"stage, each ending when the coordinator closed it: {listing}. "
        f"{slowest} takes the most: in it, every client decrypts its shares, "
        "encodes its update into the ring and masks it, and uploads it. One "
        f"client's encoding (clipping, stochastic rounding and weighting) of "
        f"{client['length']:,} values takes {client['encode_s']:.3f} s of CPU time "
        f"and its {client['peers'] + 1} masks take {client['mask_s']:.3f} s, so the "
        f"{clients} clients add about {cpu_s:.1f} CPU-seconds to the round. Here "
        "they share 2 cores with the coordinator and the other work on the "
        "machine. In a deployment each client encodes and masks on its own "
        "machine, in parallel with the others. This part of the round would "
        "then take about one client's time instead of the sum, which is an "
        "estimate that this benchmark does not measure. On average the secure rounds kept "
        f"{_parallelism(rounds['secure_cpu_s'], rounds['secure_s']):.2f} cores "
        "busy and the plain rounds "
        f"{_parallelism(rounds['plain_cpu_s'], rounds['plain_s']):.2f}. The 10 "
        "simulated clients share one Python process, so their work in Python "
        "and in calls that hold the GIL runs one at a time. "
        "The plain upload is float64 and so twice as large as the masked one. "
        "The secure sum differed from the plain sum by at most "
        f"{rounds['max_abs_difference']:.2e} per value, within the quantization "
        f"bound of {rounds['quantization_bound']:.2e}.\n"
    )


def _parallelism(cpu_s: list[float], wall_s: list[float]) -> float:
    """Return the mean number of busy cores: total CPU time over total time."""
    return sum(cpu_s) / sum(wall_s)


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values) + " s"


def _unmask_notes(results: dict[str, Any]) -> str:
    mask_rate = results["mask"]["mask_words_per_s"]
    lines = ["### Unmask\n"]
    for name, label in (
        ("secagg_plus", "SecAgg+"),
        ("complete_graph", "Complete graph"),
    ):
        entry = results["unmask"].get(name)
        if entry is None:
            continue
        words = (entry["self_masks"] + entry["pairwise_masks"]) * entry["entries"]
        lines.append(
            f"- {label}: {entry['neighbours'] or entry['clients'] - 1} neighbours "
            f"per client and threshold {entry['threshold']}. CPU times: "
            f"{_seconds(entry['seconds'])}, elapsed times: "
            f"{_seconds(entry['wall_seconds'])}. Result correct: {entry['correct']}. "
            f"The coordinator rebuilds {entry['self_masks']} self masks and "
            f"{entry['pairwise_masks']} pairwise masks, {words / 1e6:,.0f} M words, "
            f"which take {words / mask_rate:.2f} s at the mask rate above. The rest "
            "goes to rebuilding the secrets from their shares and to the key "
            "agreement and key derivation of each mask. Building the inputs took "
            f"{entry['setup_s']:.1f} s."
        )
    lines.append(
        "\nFor the complete graph the benchmark builds each Shamir sharing "
        "from a polynomial s + c x^(t-1), which has the same degree as a random "
        "one. The coordinator's interpolation therefore costs the same, while "
        "each share takes only one modular power to build. For SecAgg+ the "
        "benchmark uses `split_secret` itself.\n"
    )
    return "\n".join(lines)


def _upload_notes(results: dict[str, Any]) -> str:
    upload = results["upload"]
    secure = upload["secure_request_bytes"]
    listing = ", ".join(f"{name} {size:,}" for name, size in sorted(secure.items()))
    return (
        "### Upload bytes\n\n"
        f"Bytes per request kind in one secure round: {listing}; the float32 size "
        f"of the update is {upload['float32_bytes']:,} bytes. The masked input "
        f"alone is {upload['secure_upload_rpc_over_float32']:.4f} of it. A plain "
        f"round sends {upload['plain_over_float32']:.4f} of it, because the plain "
        "upload is float64.\n"
    )


def _flower_notes(results: dict[str, Any]) -> str:
    flower = results["flower"]
    if "seconds" not in flower:
        return f"### Flower\n\nNot measured: {flower['skipped']}.\n"
    rounds = results["round"]
    clients = rounds["real_clients"] + rounds["simulated_clients"]
    return (
        "### Flower\n\n"
        f"The benchmark runs flwr {flower['flwr_version']}, installed from PyPI "
        "into bench/.venv-flwr. It times the mask step of Flower's SecAgg+ "
        "client (`secaggplus_mod`) with Flower's own functions and default "
        "settings. The step weights and quantizes the update, adds a self mask "
        "and one pairwise mask per peer from NumPy's MT19937 generator, and "
        "reduces mod 2**32. The benchmark times it "
        f"for one client of {clients} with a float32 update of the same length. "
        f"Best of {len(flower['seconds'])} in CPU time: "
        f"{min(flower['seconds']):.3f} s, "
        f"against {flower['fedcdr_encode_and_mask_s']:.3f} s for fedcdr's encode "
        f"and mask_input, a ratio of {flower['flower_over_fedcdr']:.1f}. Flower's "
        f"masked vector is {flower['masked_dtype']}, "
        f"{flower['masked_bytes']:,} bytes.\n"
    )
