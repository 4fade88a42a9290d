"""``gossip.codec.DecodeCache``: a sender's value is decoded once per change of its bytes, a refusal is
still reported the first time, and a sender that publishes nothing (or is forgotten) leaves no entry."""

from __future__ import annotations

from typing import Any

import msgpack

from gossip.codec import Codec, DecodeCache, Framing, Refusals, WireError


def counting_codec() -> tuple[Codec[int], list[Any]]:
    """A codec whose body decoder records every call: the cache is measured by what it saves."""
    calls: list[Any] = []

    def decode_body(body: dict[str, Any]) -> int:
        calls.append(body)
        if not isinstance(body.get("n"), int):
            raise WireError("n: not a number")
        return int(body["n"])

    return Codec("count", 1, Framing.MAP, lambda n: {"n": n}, decode_body), calls


def test_the_same_bytes_are_decoded_once_and_new_bytes_again() -> None:
    codec, calls = counting_codec()
    cache = DecodeCache(codec, Refusals())
    one, two = codec.encode(1), codec.encode(2)
    assert [cache.decode(one, "a") for _ in range(5)] == [1] * 5
    assert len(calls) == 1
    assert cache.decode(one, "b") == 1  # per sender: b's first read decodes
    assert len(calls) == 2
    assert cache.decode(two, "a") == 2
    assert cache.decode(two, "a") == 2
    assert len(calls) == 3
    assert len(cache) == 2


def test_a_refused_value_is_reported_once_and_stays_refused_until_it_changes() -> None:
    codec, calls = counting_codec()
    refusals = Refusals()
    cache = DecodeCache(codec, refusals)
    bad = msgpack.packb({"v": 1, "n": "x"})
    assert cache.decode(bad, "a") is None
    assert cache.decode(bad, "a") is None
    assert len(calls) == 1
    assert refusals.logged() == {("count", "a", None)}
    assert cache.decode(codec.encode(3), "a") == 3
    assert refusals.logged() == frozenset()  # readable again: the next breakage is news


def test_nothing_published_or_forgotten_leaves_no_entry() -> None:
    codec, calls = counting_codec()
    cache = DecodeCache(codec, Refusals())
    cache.decode(codec.encode(1), "a")
    cache.decode(codec.encode(1), "b")
    assert cache.decode(None, "a") is None
    cache.forget("b")
    assert len(cache) == 0
    cache.decode(codec.encode(1), "b")
    assert len(calls) == 3
