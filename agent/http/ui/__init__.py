"""The agent's web UI, served at ``/ui`` by the agent itself (issue 9): the seeds' VIPs, routes, route
policy sets and machines pages, over the same sources and the same validation as the JSON API.

:func:`create_ui_router` makes the pages; :class:`UiSessionMiddleware` and :func:`ui_open_paths` put
them behind the API token (see :mod:`agent.http.ui.session`).
"""

from agent.http.ui.router import Ui, compile_templates, create_ui_router, ui_router
from agent.http.ui.session import UiSessionMiddleware, ui_open_paths

__all__ = ["Ui", "UiSessionMiddleware", "compile_templates", "create_ui_router", "ui_open_paths", "ui_router"]
