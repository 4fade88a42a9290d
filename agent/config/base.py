"""What every config table shares: the pydantic base model and the value checks used across sections.

A check is an ``AfterValidator`` that raises ValueError with the operator-facing message, so pydantic
reports it at the key it belongs to, together with every other problem of the file.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from agent.config.errors import Broken, Loc
from common.address import Address, format_address, split_hostport

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")


class Section(BaseModel):
    """A TOML table: unknown keys refused, values taken only as the type TOML gives (``"5"`` is not an
    integer, though an integer is a number), floats finite (TOML has inf and nan)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    def rules(self) -> Iterator[tuple[Loc, str]]:
        """Cross-field rules this table breaks, as (key inside the table, problem); run once every
        field is valid on its own."""
        return iter(())

    @model_validator(mode="after")
    def _rules_hold(self) -> Self:
        broken = tuple(self.rules())
        if broken:
            raise Broken(broken)
        return self

    def given(self) -> dict[str, Any]:
        """The keys the file actually set, so a core's own defaults apply to the rest."""
        return {name: getattr(self, name) for name in self.model_fields_set}


def core_rules(
    make: Callable[[], object], names: Collection[str], given: Collection[str]
) -> Iterator[tuple[Loc, str]]:
    """The checks a core config class (GossipConfig, PathConfig...) makes itself, blamed on the field
    its message names first; failing that, on the only key given; failing that, on the table."""
    try:
        make()
    except ValueError as exc:
        message = str(exc)
        culprit = min((n for n in names if n in message), key=message.find, default=None)
        if culprit is None and len(given) == 1:
            culprit = next(iter(given))
        yield ((culprit,) if culprit else ()), message


def between(low: int, high: int) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"out of range: {value} (must be {low}-{high})")
        return value

    return AfterValidator(check)


NonNegativeInt = Annotated[int, Field(ge=0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]


def _plain_text(value: str) -> str:
    if not value or any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"must be non-empty with no spaces or control characters (got {value!r})")
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


Text = Annotated[str, AfterValidator(_plain_text)]  # names: no spaces, nothing unprintable
NonEmpty = Annotated[str, AfterValidator(_non_empty)]


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return format_address((self.host, self.port))

    @property
    def address(self) -> Address:
        return (self.host, self.port)


def parse_address(text: str, default_port: int | None, *, names: bool, min_port: int = 0) -> HostPort:
    """``host:port`` text as a HostPort; ``names``: a host name is allowed as well as an IP address."""
    try:
        host, port = split_hostport(text, default_port)
    except ValueError as exc:
        raise ValueError(f"bad address {text!r}: {exc}") from None
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if not names or not _HOSTNAME_RE.match(host) or host.replace(".", "").isdigit():
            wanted = "an IP address or host name" if names else "an IP address"
            raise ValueError(f"bad address {text!r}: host must be {wanted}") from None
    if port < min_port:
        raise ValueError(f"bad address {text!r}: port must be {min_port}-65535")
    return HostPort(host, port)


def address(default_port: int | None, *, names: bool, min_port: int = 0) -> AfterValidator:
    """Checks ``host:port`` text where it is read; the value stays text, and whoever builds the config
    parses it again with the default port that may depend on another key."""

    def check(text: str) -> str:
        parse_address(text, default_port, names=names, min_port=min_port)
        return text

    return AfterValidator(check)
