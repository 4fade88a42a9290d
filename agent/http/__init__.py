"""The agent's HTTP face: the JSON API, the gossip debug endpoint, metrics and the web UI.

:mod:`.app` assembles the ASGI app from one router per resource (:mod:`.objects`, :mod:`.bgp`,
:mod:`.peers`), the one error shape (:mod:`.errors`), bearer-token auth (:mod:`.auth`), Prometheus
metrics (:mod:`.metrics`) and the web UI (:mod:`.ui`). :mod:`.advertise` is where other machines reach
this API. Routers read the agent through small protocols, never the other way round.
"""
