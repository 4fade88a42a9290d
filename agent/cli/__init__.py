"""The ``wiremesh`` command: :mod:`.main` parses and dispatches; :mod:`.client` talks to an agent's
HTTP API; :mod:`.output` prints tables and JSON; one module per command group (:mod:`.announce` for
``vip``/``route``, :mod:`.policy`, :mod:`.machine`, :mod:`.health`, :mod:`.bgp`, :mod:`.peers`,
:mod:`.lab`). The CLI enforces no rule of its own: what the API refuses is printed as the API said it.
"""
