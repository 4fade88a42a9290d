"""The agent's web UI, served at ``/ui`` by the agent itself (issue 9): the seeds' VIPs, routes, route
policy sets and machines pages, over the same sources and the same validation as the JSON API.

:func:`ui_router` makes the pages over a :class:`Ui`; :class:`UiSessionMiddleware` and
:func:`ui_open_paths` put them behind the API token (see :mod:`agent.http.ui.session`).
"""

from agent.http.ui.router import Ui, compile_templates, ui_router
from agent.http.ui.session import UiSessionMiddleware, ui_open_paths

__all__ = ["Ui", "UiSessionMiddleware", "compile_templates", "ui_open_paths", "ui_router"]
