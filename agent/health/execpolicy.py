"""Whether this machine lets an exec health check run a command.

Exec checks run commands as the agent's user, and cluster objects (which any node's API can edit)
name the command. So the decision is the machine's own: its config file must set
``allow_exec_checks = true``, and may list the executables allowed in ``exec_check_paths`` (absolute
paths, compared exactly; an empty list allows any command). A refused check reports the reason
:meth:`ExecPolicy.refusal` gives, which names the config key to change.

The executable is the command's first word as ``shlex.split`` reads it, so the check runner must
execute the command the same way (argv from ``shlex.split``, no shell), or the decision means nothing.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from agent.config.loader import AgentConfig


@dataclass(frozen=True, slots=True)
class ExecPolicy:
    allowed: bool = False
    paths: tuple[str, ...] = ()  # empty: any executable, once allowed

    @classmethod
    def from_config(cls, cfg: AgentConfig) -> ExecPolicy:
        return cls(allowed=cfg.allow_exec_checks, paths=cfg.exec_check_paths)

    def refusal(self, command: str) -> str | None:
        """None when ``command`` may run here, else why not (one line, naming the key to change)."""
        if not self.allowed:
            return (
                "exec checks are disabled on this machine (set allow_exec_checks = true in its config file)"
            )
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            return f"cannot parse command {command!r}: {exc}"
        if not argv:
            return "empty command"
        executable = argv[0]
        if self.paths and executable not in self.paths:
            allowed = ", ".join(map(shlex.quote, self.paths))
            return f"{shlex.quote(executable)} is not in exec_check_paths (allowed: {allowed})"
        return None
