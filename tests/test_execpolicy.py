"""Exec health checks: allowed only as this machine's config file says, and every refusal says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.loader import load_config
from agent.health.execpolicy import ExecPolicy

DISABLED = "exec checks are disabled on this machine (set allow_exec_checks = true in its config file)"


def test_disabled_by_default() -> None:
    policy = ExecPolicy()
    assert policy.refusal("/usr/local/bin/check-web --port 80") == DISABLED
    # Disabled wins over everything else: a listed path, an unparseable or empty command.
    listed = ExecPolicy(allowed=False, paths=("/usr/local/bin/check-web",))
    assert listed.refusal("/usr/local/bin/check-web") == DISABLED
    assert policy.refusal("'unclosed") == DISABLED
    assert policy.refusal("") == DISABLED


def test_allowed_with_no_paths_runs_anything() -> None:
    policy = ExecPolicy(allowed=True)
    assert policy.refusal("/usr/bin/curl -fsS http://127.0.0.1/") is None
    assert policy.refusal("pgrep nginx") is None  # a bare name too: the list is what restricts


def test_paths_restrict_the_executable() -> None:
    policy = ExecPolicy(allowed=True, paths=("/usr/local/bin/check-web",))
    assert policy.refusal("/usr/local/bin/check-web") is None
    assert policy.refusal("/usr/local/bin/check-web --url 'http://x/a b'") is None
    assert policy.refusal("/usr/bin/curl http://127.0.0.1/") == (
        "/usr/bin/curl is not in exec_check_paths (allowed: /usr/local/bin/check-web)"
    )


@pytest.mark.parametrize(
    "command",
    [
        "check-web",  # a bare name is not the listed absolute path
        "/usr/local/bin/../bin/check-web",  # compared exactly, not normalised
        "/usr/local/bin/check-web.sh",
        " /usr/local/bin/check-web2 /usr/local/bin/check-web",  # only the first word counts
        "'/usr/local/bin/check-web;id'",  # one quoted word: not the listed executable
    ],
)
def test_near_misses_are_refused(command: str) -> None:
    policy = ExecPolicy(allowed=True, paths=("/usr/local/bin/check-web", "/opt/checks/db"))
    reason = policy.refusal(command)
    assert reason is not None
    assert reason.endswith(" is not in exec_check_paths (allowed: /usr/local/bin/check-web, /opt/checks/db)")


def test_the_executable_is_the_first_shlex_word() -> None:
    policy = ExecPolicy(allowed=True, paths=("/usr/local/bin/check-web",))
    # Quotes are read as shlex reads them; the rest are arguments (the runner must not use a shell).
    assert policy.refusal("'/usr/local/bin/check-web' ; rm -rf /tmp/x") is None
    assert policy.refusal('"/usr/local/bin/check-web" --url http://127.0.0.1/') is None


def test_paths_with_spaces_are_quoted_in_the_reason() -> None:
    policy = ExecPolicy(allowed=True, paths=("/opt/my checks/db",))
    assert policy.refusal("'/opt/my checks/db' --fast") is None
    assert policy.refusal("/opt/my checks/db") == (
        "/opt/my is not in exec_check_paths (allowed: '/opt/my checks/db')"
    )


def test_unparseable_command_is_refused_with_the_shlex_error() -> None:
    policy = ExecPolicy(allowed=True)
    assert policy.refusal("/usr/bin/check 'unclosed") == (
        'cannot parse command "/usr/bin/check \'unclosed": No closing quotation'
    )
    assert (
        policy.refusal("/usr/bin/check \\")
        == "cannot parse command '/usr/bin/check \\\\': No escaped character"
    )


@pytest.mark.parametrize("command", ["", "   "])
def test_empty_command_is_refused(command: str) -> None:
    assert ExecPolicy(allowed=True).refusal(command) == "empty command"


def test_from_config(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    base = "insecure = true\nbind = '127.0.0.1:1'\n"
    path.write_text(base)
    assert ExecPolicy.from_config(load_config(path)) == ExecPolicy(allowed=False, paths=())
    path.write_text(base + "allow_exec_checks = true\nexec_check_paths = ['/usr/local/bin/check-web']\n")
    policy = ExecPolicy.from_config(load_config(path))
    assert policy == ExecPolicy(allowed=True, paths=("/usr/local/bin/check-web",))
    assert policy.refusal("/usr/local/bin/check-web") is None
    assert policy.refusal("/bin/sh -c true") is not None


def test_frozen() -> None:
    policy = ExecPolicy()
    with pytest.raises(AttributeError):
        policy.allowed = True  # type: ignore[misc]
