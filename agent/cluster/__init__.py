"""Cluster objects: what an operator edits on any machine and every machine holds.

The models and their validation (:mod:`.objects`), the hybrid logical clock that versions every write
(:mod:`.hlc`), the replicated last-writer-wins store (:mod:`.store`), its SQLite file (:mod:`.storage`)
and its replication over gossip's application channel (:mod:`.replication`). Everything above reads
objects from here; nothing here knows about health checks, BGP or HTTP.
"""
