"""Token counting throughput and middle truncation of 1 MB against its 50 ms goal.

Run: ``python -m bench.tokens [--runs N]``. For each 1 MB text: counting speed (MB/s),
then `truncate_middle` to 4,096 tokens against a naive truncation that encodes the
whole text (the baseline), both measured in the same run: min and median ms, the ratio
of each to the 50 ms goal, and the naive/fast speed-up.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import tiktoken

from runtime.llm.tokens import DEFAULT_MARKER, count_tokens, encoding_for, truncate_middle

MODEL = "gpt-4o-mini"
SIZE = 1_000_000
BUDGET = 4096
GOAL_MS = 50.0


def _texts() -> dict[str, str]:
    stdlib = Path(os.__file__).parent
    code = "".join(
        p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("*.py"))
    )
    rng = random.Random(1)
    words = ["the", "bees", "of", "town", "build", "durable", "hives", "and", "workflows",
             "retry", "every", "failed", "step"]
    prose = " ".join(rng.choice(words) for _ in range(SIZE // 4))
    log_lines = "".join(
        f"2025-01-01T00:00:{i % 60:02d}Z INFO worker task={i} status=ok ms={i % 997}\n"
        for i in range(SIZE // 50)
    )
    return {
        "python source": code[:SIZE],
        "prose": prose[:SIZE],
        "log lines": log_lines[:SIZE],
        "base64": base64.b64encode(rng.randbytes(SIZE))[:SIZE].decode(),
        "emoji + cjk": ("蜂の町🐝" * SIZE)[: SIZE // 3],  # ~1 MB of UTF-8
        "spaces (worst case)": " " * SIZE,
    }


def naive_truncate(text: str, max_tokens: int, enc: tiktoken.Encoding) -> str:
    """Encode everything, keep both ends, count the omitted tokens exactly."""
    toks = enc.encode_ordinary(text)
    if len(toks) <= max_tokens:
        return text
    marker = DEFAULT_MARKER.format(omitted=len(toks))
    keep = max_tokens - len(enc.encode_ordinary(marker)) - 8
    return enc.decode(toks[: keep // 2]) + marker + enc.decode(toks[len(toks) - keep // 2 :])


def _time(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    fn()  # warm
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return min(samples), statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    enc = encoding_for(MODEL)
    print(f"model {MODEL}, encoding {enc.name}; {args.runs} runs; budget {BUDGET} tokens; "
          f"goal {GOAL_MS:.0f} ms")
    print(f"{'text (1 MB)':20} {'tokens':>8} {'count MB/s':>10} | "
          f"{'fast min':>8} {'med':>6} {'/goal':>6} | {'naive min':>9} {'med':>6} "
          f"{'/goal':>6} | {'speed-up':>8} {'kept':>5}")
    for name, text in _texts().items():
        mb = len(text.encode()) / 1e6
        runs = max(3, args.runs // 5) if "worst" in name else args.runs
        count_min, _ = _time(lambda t=text: count_tokens(t, MODEL), runs)  # type: ignore[misc]
        fast_min, fast_med = _time(
            lambda t=text: truncate_middle(t, BUDGET, MODEL), runs  # type: ignore[misc]
        )
        naive_min, naive_med = _time(
            lambda t=text: naive_truncate(t, BUDGET, enc), runs  # type: ignore[misc]
        )
        kept = count_tokens(truncate_middle(text, BUDGET, MODEL), MODEL)
        print(
            f"{name:20} {count_tokens(text, MODEL):8d} {mb / (count_min / 1000):10.1f} | "
            f"{fast_min:8.2f} {fast_med:6.2f} {fast_med / GOAL_MS:6.3f} | "
            f"{naive_min:9.2f} {naive_med:6.2f} {naive_med / GOAL_MS:6.3f} | "
            f"{naive_med / fast_med:7.1f}x {kept:5d}"
        )


if __name__ == "__main__":
    main()
