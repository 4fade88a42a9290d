"""The agent's configuration: TOML file and flags in (:mod:`.loader`), validated by pydantic models
(:mod:`.model`, :mod:`.bgp`, :mod:`.wireguard`), problems out in one format (:mod:`.errors`).

Nothing here imports the parts of the agent that use the configuration, so each of them can depend on
it without a cycle.
"""
