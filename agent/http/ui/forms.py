"""HTML forms to object bodies, and validation problems back to form fields.

Nothing here validates: a form is turned into the same JSON-like body the API takes (strings left as
typed, so the models report a bad number in their own words) and handed to the store, which runs the
one set of rules (:mod:`agent.cluster.objects`). Only notation is read here, e.g. a prefix-list line
``10.0.0.0/8 ge 16 le 24`` or a comma-separated community list. Empty optional fields are left out, so
the models' defaults apply as they do for an API client that omits them.

Field names are flat (``hc_interval``, ``rule-2-set_med``); :func:`field_for` maps a problem's ``loc``
(``("health_check", "interval")``, ``("rules", 2, "actions", "set_med")``) to the field it belongs next to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from agent.cluster.objects import Problem

JSONDict = dict[str, Any]
GENERAL = "_general"


class Form:
    """A submitted ``application/x-www-form-urlencoded`` body: every value of every field, in order."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.values: dict[str, list[str]] = {}
        for key, value in pairs:
            self.values.setdefault(key, []).append(value)

    @classmethod
    def parse(cls, body: bytes) -> Form:
        return cls(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))

    def get(self, key: str, default: str = "") -> str:
        values = self.values.get(key)
        return values[0] if values else default

    def text(self, key: str) -> str:
        return self.get(key).strip()

    def all(self, key: str) -> list[str]:
        return [v.strip() for v in self.values.get(key, []) if v.strip()]

    def checked(self, key: str) -> bool:
        return key in self.values

    def __contains__(self, key: str) -> bool:
        return key in self.values


@dataclass
class Errors:
    """Problems by form field; those that fit no field are ``general`` (shown above the form)."""

    by_field: dict[str, list[str]] = field(default_factory=dict)

    def add(self, key: str, msg: str) -> None:
        self.by_field.setdefault(key, []).append(msg)

    def get(self, key: str) -> list[str]:
        return self.by_field.get(key, [])

    @property
    def general(self) -> list[str]:
        return self.get(GENERAL)

    def __bool__(self) -> bool:
        return bool(self.by_field)


def _put(body: JSONDict, key: str, value: str) -> None:
    """Optional fields: left out when empty, so the model's default applies."""
    if value != "":
        body[key] = value


# --- VIPs and routes --------------------------------------------------------------------------------

HC_FIELDS = ("interval", "timeout", "healthy_threshold", "unhealthy_threshold")


def health_check_from(form: Form) -> JSONDict | None:
    """The Health Check section; no type chosen means no check (always announced while enabled)."""
    kind = form.text("hc_type")
    if not kind:
        return None
    check: JSONDict = {"type": kind, "target": form.get("hc_target").strip()}
    for name in HC_FIELDS:
        _put(check, name, form.text(f"hc_{name}"))
    return check


def _announced_body(form: Form, where: str) -> JSONDict:
    """What VIPs and routes share; ``where`` is the field that says what is announced."""
    body: JSONDict = {
        "name": form.text("name"),
        where: form.text(where),
        "enabled": form.checked("enabled"),
        "machines": form.all("machines"),
    }
    check = health_check_from(form)
    if check is not None:
        body["health_check"] = check
    return body


def vip_body(form: Form, *, with_holdoff: bool) -> JSONDict:
    body = _announced_body(form, "address")
    if with_holdoff:
        _put(body, "holdoff", form.text("holdoff"))
    return body


def route_body(form: Form) -> JSONDict:
    return _announced_body(form, "prefix")


# --- policy sets ------------------------------------------------------------------------------------

_RULE_FIELD = re.compile(r"^rule-(\d+)-")
_SPLIT = re.compile(r"[\s,]+")


def words(text: str) -> list[str]:
    """A community list as typed: separated by commas, spaces or new lines."""
    return [w for w in _SPLIT.split(text.strip()) if w]


def prefix_entry(line: str) -> JSONDict:
    """``PREFIX [ge N] [le M]``; anything unreadable goes to the model as typed, which names the problem."""
    parts = line.split()
    entry: JSONDict = {"prefix": parts[0] if parts else ""}
    rest = parts[1:]
    while len(rest) >= 2 and rest[0].lower() in ("ge", "le"):
        entry[rest[0].lower()] = rest[1]
        rest = rest[2:]
    if rest:
        entry["prefix"] = line.strip()  # not our notation: let the prefix check say so
    return entry


def format_prefix_entry(entry: Mapping[str, Any]) -> str:
    text = str(entry.get("prefix", ""))
    for key in ("ge", "le"):
        if entry.get(key) is not None:
            text += f" {key} {entry[key]}"
    return text


def rule_indexes(form: Form) -> list[int]:
    """The rules in the order the form lists them (the page renumbers them as they are moved)."""
    found = {int(m.group(1)) for key in form.values if (m := _RULE_FIELD.match(key))}
    return sorted(found)


def rule_body(form: Form, i: int) -> JSONDict:
    p = f"rule-{i}-"
    match: JSONDict = {}
    lines = [ln for ln in form.get(p + "prefixes").splitlines() if ln.strip()]
    if lines:
        match["prefix_list"] = [prefix_entry(ln) for ln in lines]
    communities = words(form.get(p + "communities"))
    if communities:
        match["communities"] = communities
    _put(match, "as_path", form.get(p + "as_path").strip())
    actions: JSONDict = {}
    _put(actions, "set_local_pref", form.text(p + "set_local_pref"))
    _put(actions, "set_med", form.text(p + "set_med"))
    mode = form.text(p + "comm_mode")
    if mode == "edit":
        edit: JSONDict = {}
        for key in ("add", "remove"):
            values = words(form.get(f"{p}comm_{key}"))
            if values:
                edit[key] = values
        actions["communities"] = edit
    elif mode == "replace":
        actions["communities"] = {"replace": words(form.get(p + "comm_replace"))}
    asn = form.text(p + "prepend_asn")
    if asn:
        prepend: JSONDict = {"asn": asn}
        _put(prepend, "count", form.text(p + "prepend_count"))
        actions["as_prepend"] = prepend
    rule: JSONDict = {"match": match, "actions": actions, "result": form.text(p + "result") or "accept"}
    _put(rule, "name", form.text(p + "name"))
    _put(rule, "description", form.text(p + "description"))
    return rule


def policy_set_body(form: Form) -> JSONDict:
    """The policy set, its rules in the order the form lists them. A refused form is shown again with
    its rules numbered 0..n-1 in that order, so an error at ``rules.N`` lands beside the N-th rule."""
    return {
        "name": form.text("name"),
        "default": form.text("default") or "reject",
        "rules": [rule_body(form, i) for i in rule_indexes(form)],
    }


def policy_form_values(policy: Mapping[str, Any]) -> list[dict[str, str]]:
    """A stored policy set's rules as the edit form's field values."""
    out = []
    for rule in policy.get("rules", []):
        match, actions = rule.get("match", {}), rule.get("actions", {})
        communities = actions.get("communities") or {}
        prepend = actions.get("as_prepend") or {}
        mode = "replace" if communities.get("replace") is not None else ("edit" if communities else "")
        out.append(
            {
                "name": rule.get("name") or "",
                "description": rule.get("description") or "",
                "prefixes": "\n".join(format_prefix_entry(e) for e in match.get("prefix_list", [])),
                "communities": ", ".join(match.get("communities", [])),
                "as_path": match.get("as_path") or "",
                "set_local_pref": _str(actions.get("set_local_pref")),
                "set_med": _str(actions.get("set_med")),
                "comm_mode": mode,
                "comm_add": ", ".join(communities.get("add") or []),
                "comm_remove": ", ".join(communities.get("remove") or []),
                "comm_replace": ", ".join(communities.get("replace") or []),
                "prepend_asn": _str(prepend.get("asn")),
                "prepend_count": _str(prepend.get("count")),
                "result": rule.get("result", "accept"),
            }
        )
    return out


RULE_KEYS = (
    "name",
    "description",
    "prefixes",
    "communities",
    "as_path",
    "set_local_pref",
    "set_med",
    "comm_mode",
    "comm_add",
    "comm_remove",
    "comm_replace",
    "prepend_asn",
    "prepend_count",
    "result",
)
EMPTY_RULE: Mapping[str, str] = {**dict.fromkeys(RULE_KEYS, ""), "result": "accept"}


def policy_form_from_submitted(form: Form) -> list[dict[str, str]]:
    """The rules as submitted, to show again beside their errors."""
    return [{k: form.get(f"rule-{i}-{k}") for k in RULE_KEYS} for i in rule_indexes(form)]


def _str(value: Any) -> str:
    return "" if value is None else str(value)


# --- problems to fields -----------------------------------------------------------------------------

POLICY_LISTS = ("import_policies", "export_policies")
_ACTION_FIELDS = {
    "set_local_pref": "set_local_pref",
    "set_med": "set_med",
    "as_prepend": "prepend_asn",
}


def field_for(loc: tuple[str | int, ...]) -> str:
    """The form field a problem belongs next to; :data:`GENERAL` when none fits."""
    if not loc:
        return GENERAL
    head = loc[0]
    if head == "health_check":
        if len(loc) >= 2 and loc[1] in ("type", "target", *HC_FIELDS):
            return f"hc_{loc[1]}"
        return "hc_type"
    if head == "rules" and len(loc) >= 2 and isinstance(loc[1], int):
        return _rule_field(loc[1], loc[2:])
    if head in ("name", "address", "prefix", "enabled", "machines", "holdoff", "default", *POLICY_LISTS):
        return str(head)
    return GENERAL


def _rule_field(i: int, rest: tuple[str | int, ...]) -> str:
    p = f"rule-{i}-"
    if not rest:
        return p + "name"
    part = rest[0]
    if part == "match" and len(rest) >= 2:
        return p + {"prefix_list": "prefixes", "communities": "communities", "as_path": "as_path"}.get(
            str(rest[1]), "prefixes"
        )
    if part == "actions" and len(rest) >= 2:
        if rest[1] == "communities":
            which = str(rest[2]) if len(rest) >= 3 else ""
            return p + (f"comm_{which}" if which in ("add", "remove", "replace") else "comm_mode")
        if rest[1] == "as_prepend" and len(rest) >= 3 and rest[2] == "count":
            return p + "prepend_count"
        return p + _ACTION_FIELDS.get(str(rest[1]), "set_local_pref")
    if part in ("name", "description", "result"):
        return p + str(part)
    return p + "name"


def errors_from(problems: Iterable[Problem]) -> Errors:
    """Problems as form errors, each beside its field; a problem that fits no field says where it is."""
    errors = Errors()
    for problem in problems:
        key = field_for(problem.loc)
        where = ".".join(str(p) for p in problem.loc)
        errors.add(key, problem.msg if key != GENERAL or not where else f"{where}: {problem.msg}")
    return errors
