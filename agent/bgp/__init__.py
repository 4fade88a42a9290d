"""The BGP speaker of one machine, bottom up: ExaBGP's API codec (:mod:`.api`) and bridge process
(:mod:`.bridge`), its config renderer (:mod:`.config`), restarts and reloads decided without I/O
(:mod:`.lifecycle`) and run by :mod:`.supervisor`; who to peer with (:mod:`.mesh`; route
reflector placement, not yet used for neighbors, :mod:`.reflectors`), what to send
(:mod:`.export`, :mod:`.adjout`), what came in (:mod:`.ingest`, :mod:`.status`); and
:mod:`.speaker`, which composes them with the routing core and the kernel.

Kept import-free: :mod:`agent.bgp.bridge` runs as ExaBGP's API process, and everything this package
imports would add to its start-up time.
"""
