"""``/v1/keys``: the gossip keyring of every live member, listed and rotated (like ``consul keyring``).

``GET /v1/keys`` lists; ``POST /v1/keys/install``, ``/use`` and ``/remove`` take ``{"key": BASE64}``.
Each asks every live member and this one (:meth:`gossip.GossipNode.rotate_keys`) and answers 200 with
each member's result (``ok``, ``error`` with its reason, or ``no answer``) and, per key, how many of
the members that answered hold it and how many use it as their primary. Keys are named by fingerprint
(the first 12 hex digits of the SHA-256 of the raw key) and never shown: whoever rotates has the key
from ``wiremesh keygen``, and an answer that carried keys would put them in terminals and CI logs.

A request this machine's own ring refuses (a key it does not hold for ``use``, its primary for
``remove``, no keyring at all) is a 409 and nothing is sent anywhere; a key that is not 32 bytes of
base64 is a 422. Both in the API's one error format; neither echoes the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, field_validator

from agent.http.errors import ERROR_RESPONSES, ErrorBody
from gossip import KeyAnswer, KeyringError, fingerprint, parse_key


class KeyRotator(Protocol):
    """The gossip node, as this router sees it."""

    async def rotate_keys(self, op: str, key: bytes) -> Mapping[str, KeyAnswer | None]:
        """Each member's answer by name (None: no answer); :class:`KeyringError` when refused here."""
        ...


class KeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str

    @field_validator("key")
    @classmethod
    def _base64_key(cls, value: str) -> str:
        try:
            parse_key(value)
        except KeyringError as exc:
            raise ValueError(str(exc)) from None
        return value


class MemberKeys(BaseModel):
    name: str
    status: Literal["ok", "error", "no answer"]
    error: str | None
    primary: str | None
    keys: list[str]


class KeyCount(BaseModel):
    fingerprint: str
    members: int
    primary: int


class KeysView(BaseModel):
    op: str
    key: str | None  # the fingerprint of the key the operation named
    asked: int
    answered: int
    ok: int
    keys: list[KeyCount]
    members: list[MemberKeys]


def keys_view(op: str, key: bytes, answers: Mapping[str, KeyAnswer | None]) -> KeysView:
    members = []
    held: dict[str, list[int]] = {}
    for name in sorted(answers):
        answer = answers[name]
        if answer is None:
            members.append(MemberKeys(name=name, status="no answer", error=None, primary=None, keys=[]))
            continue
        status: Literal["ok", "error"] = "ok" if answer.error is None else "error"
        members.append(
            MemberKeys(
                name=name, status=status, error=answer.error, primary=answer.primary, keys=list(answer.keys)
            )
        )
        for i, fp in enumerate(answer.keys):
            counts = held.setdefault(fp, [0, 0])
            counts[0] += 1
            counts[1] += i == 0
    return KeysView(
        op=op,
        key=fingerprint(key) if key else None,
        asked=len(answers),
        answered=sum(a is not None for a in answers.values()),
        ok=sum(m.status == "ok" for m in members),
        keys=[
            KeyCount(fingerprint=fp, members=n, primary=p)
            for fp, (n, p) in sorted(held.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))
        ],
        members=members,
    )


def create_keys_router(rotator: KeyRotator | None) -> APIRouter:
    """Without a rotator (an app built without a gossip node) every endpoint answers 404 saying so."""
    refused = {"model": ErrorBody, "description": "This machine's keyring refuses it; nothing was sent"}
    router = APIRouter(prefix="/v1/keys", tags=["keys"], responses={**ERROR_RESPONSES, 409: refused})

    async def run(op: str, key: bytes) -> KeysView:
        if rotator is None:
            raise HTTPException(404, "key rotation is not available on this agent")
        try:
            answers = await rotator.rotate_keys(op, key)
        except KeyringError as exc:
            raise HTTPException(409, f"refused by this machine, nothing changed anywhere: {exc}") from None
        return keys_view(op, key, answers)

    @router.get("", summary="Every live member's keys (fingerprints), and how many hold each")
    async def list_keys() -> KeysView:
        return await run("list", b"")

    @router.post("/install", summary="Add a key on every live member (a key already there is kept)")
    async def install_key(body: KeyBody) -> KeysView:
        return await run("install", parse_key(body.key))

    @router.post("/use", summary="Make an installed key the primary on every live member")
    async def use_key(body: KeyBody) -> KeysView:
        return await run("use", parse_key(body.key))

    @router.post("/remove", summary="Remove a key (not the primary) on every live member")
    async def remove_key(body: KeyBody) -> KeysView:
        return await run("remove", parse_key(body.key))

    return router


__all__ = ["KeyBody", "KeyRotator", "KeysView", "create_keys_router", "keys_view"]
