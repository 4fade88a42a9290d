"""The one rule for a member name, shared by the wire decoder, the agent's config and its API.

A member name is also a machine name: it is printed in logs and the UI and travels in URL paths
(``/machines/NAME``). So it must be printable text with no spaces, no ``/`` and not the dot segments
``.`` and ``..`` (which clients resolve away), 1 to :data:`MAX_NAME_LEN` characters. Gossip applies
it to every name a message carries, so a sender that holds the real key still cannot plant a member
the rest of the agent cannot name safely.
"""

from __future__ import annotations

MAX_NAME_LEN = 128


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a member name, or ``None`` if it can. Only C-level string methods, as
    the decoder calls it for every name in every datagram."""
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME_LEN:
        return f"too long ({len(name)} characters, at most {MAX_NAME_LEN})"
    # isprintable() is False for every whitespace but the space, control and format characters.
    if not name.isprintable() or " " in name:
        return "must contain no spaces or unprintable characters"
    if "/" in name:
        return "must contain no '/'"
    if name in (".", ".."):
        return "must not be '.' or '..'"
    return None


def is_member_name(name: str) -> bool:
    return name_problem(name) is None


def check_member_name(name: str) -> str:
    """``name`` if it is a valid member name; otherwise :class:`ValueError` saying why (for validators)."""
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(f"not a valid machine name ({problem}): {name!r}")
    return name
