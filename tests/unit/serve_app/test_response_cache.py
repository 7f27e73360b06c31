"""The response cache's core: its key, Cache-Control, expiry, eviction, and the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from serve_app.config import DEFAULT_CONFIG_PATH, ConfigError, parse_config
from serve_app.response_cache import (
    CacheConfig,
    CacheControl,
    CachedAnswer,
    ResponseCache,
    cache_key,
    parse_cache_control,
)
from serve_app.schemas import parse_request


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _chat(**extra: object) -> object:
    return parse_request({"model": "auto", "messages": [{"role": "user", "content": "hi"}], **extra})


def _answer(text: str = "hello", request_id: str = "chatcmpl-1") -> CachedAnswer:
    return CachedAnswer(
        request_id=request_id,
        model="gpt-4o-mini",
        provider="openai",
        provider_model="gpt-4o-mini-2024-07-18",
        text=text,
        finish_reason="stop",
        usage={"input_tokens": 5, "output_tokens": 2, "cached_tokens": 0, "reasoning_tokens": 0},
        tool_calls=[{"id": "c1", "name": "f", "arguments": "{}"}],
        task_type="simple_queries",
        cost_usd=0.00012,
    )


def _cache(tmp_path: Path, clock: Clock | None = None, **settings: object) -> ResponseCache:
    spec = CacheConfig.model_validate({"enabled": True, "path": str(tmp_path / "c.db"), **settings})
    return ResponseCache(spec, clock or Clock())


def test_the_key_ignores_what_does_not_change_the_answer_and_keeps_what_does() -> None:
    base = cache_key(_chat(), "global")  # type: ignore[arg-type]
    same = [
        _chat(stream=True, stream_options={"include_usage": True}),
        _chat(user="u-42", metadata={"trace": "x"}, store=True, presence_penalty=0),
        parse_request({"messages": [{"content": "hi", "role": "user"}], "model": "auto"}),
    ]
    for chat in same:
        assert cache_key(chat, "global") == base  # type: ignore[arg-type]
    different = [
        _chat(temperature=0.0),
        _chat(max_tokens=10),
        _chat(seed=1),
        _chat(presence_penalty=0.5),
        _chat(reasoning_effort="high"),
        _chat(model="auto:cost"),
        parse_request({"model": "auto", "messages": [{"role": "user", "content": "hi!"}]}),
        _chat(response_format={"type": "json_object"}),
    ]
    keys = {cache_key(chat, "global") for chat in different}  # type: ignore[arg-type]
    assert len(keys) == len(different) and base not in keys
    assert cache_key(_chat(), "key:k1") != cache_key(_chat(), "key:k2") != base  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, CacheControl()),
        ("", CacheControl()),
        ("no-cache", CacheControl(read=False)),
        ("No-Cache, max-age=60", CacheControl(read=False)),
        ("no-store", CacheControl(read=False, write=False)),
        ("max-age=0", CacheControl(read=False)),
        ("max-age=300", CacheControl(max_age_s=300.0)),
        ('max-age="30", private', CacheControl(max_age_s=30.0)),
        ("max-age=soon", CacheControl()),  # not a number: ignored, as HTTP says
        ("only-if-cached, immutable", CacheControl()),
    ],
)
def test_cache_control(header: str | None, expected: CacheControl) -> None:
    assert parse_cache_control(header) == expected


def test_an_answer_is_given_back_until_it_expires_and_max_age_is_honoured(tmp_path: Path) -> None:
    clock = Clock()
    cache = _cache(tmp_path, clock, ttl_s=100)
    key = b"k" * 32
    assert cache.get(key) is None
    assert cache.put(key, "global", _answer())
    clock.now += 40
    got = cache.get(key)
    assert got is not None and got.text == "hello" and got.tool_calls == _answer().tool_calls
    assert got.created_at == clock.now - 40 and got.hits == 1
    assert cache.get(key, max_age_s=30) is None  # 40 s old: too old for this client
    assert cache.get(key, max_age_s=60) is not None
    clock.now += 61  # 101 s after it was stored
    assert cache.get(key) is None
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["stored"]) == (2, 3, 1)
    assert stats["entries"] == 1 and stats["live_entries"] == 0 and stats["hit_ratio"] == 0.4
    assert cache.purge() == 1 and cache.stats()["entries"] == 0


def test_the_oldest_go_first_past_max_entries_and_long_answers_are_not_stored(tmp_path: Path) -> None:
    clock = Clock()
    cache = _cache(tmp_path, clock, max_entries=3, max_answer_bytes=1000)
    for i in range(5):
        clock.now += 1
        assert cache.put(bytes([i]) * 32, "global", _answer(f"answer {i}"))
    assert [cache.get(bytes([i]) * 32) is not None for i in range(5)] == [False, False, True, True, True]
    assert cache.stats()["evicted"] == 2
    assert not cache.put(b"x" * 32, "global", _answer("x" * 2000))
    assert cache.get(b"x" * 32) is None and cache.stats()["too_large"] == 1
    assert cache.put(bytes([4]) * 32, "global", _answer("replaced"))  # the same request again
    got = cache.get(bytes([4]) * 32)
    assert got is not None and got.text == "replaced" and cache.entries == 3  # replaced, not added
    clock.now += 1
    cache.put(b"y" * 32, "global", _answer("new"))  # a new one: the oldest left goes
    assert cache.get(bytes([2]) * 32) is None and cache.get(bytes([3]) * 32) is not None
    assert cache.entries == cache.stats()["entries"] == 3 and cache.stats()["evicted"] == 3


def test_answers_survive_a_restart_and_clear_takes_one_scope_or_all(tmp_path: Path) -> None:
    clock = Clock()
    cache = _cache(tmp_path, clock)
    cache.put(b"a" * 32, "key:k1", _answer("a"))
    cache.put(b"b" * 32, "key:k2", _answer("b"))
    cache.put(b"c" * 32, "key:k2", _answer("c"))
    cache.close()
    reopened = _cache(tmp_path, clock)
    assert reopened.entries == 3
    got = reopened.get(b"a" * 32)
    assert got is not None and got.text == "a" and got.cost_usd == 0.00012
    assert reopened.clear("key:k2") == 2 and reopened.get(b"b" * 32) is None
    assert reopened.clear() == 1 and reopened.stats()["entries"] == 0


def test_the_cache_section_of_the_configuration_is_checked() -> None:
    data = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    assert parse_config(data).cache.enabled is False
    with pytest.raises(ConfigError, match=r"cache\.scope"):
        parse_config({**data, "cache": {"enabled": True, "scope": "tenant"}})
    with pytest.raises(ConfigError, match=r"cache\.ttl_s"):
        parse_config({**data, "cache": {"ttl_s": 0}})
    with pytest.raises(ConfigError, match=r"cache\.colour"):
        parse_config({**data, "cache": {"colour": "blue"}})
