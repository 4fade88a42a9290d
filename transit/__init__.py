"""transit: WireGuard peers, direct-path monitoring and relay selection.

Sans-I/O cores: ``meta`` (gossip metadata, mesh-address claims), ``pathmon`` (per-peer probes, RTT,
loss, up/down), ``reachability`` (the vector each machine publishes), ``relay`` (which relay, with
hysteresis), ``wgdevice`` (desired -> actual peer reconcile) and the ``uapi`` codec. I/O: ``keys`` and
``claimfile`` (state directory), ``uapi.UapiClient`` and ``wggo`` (the wireguard-go child process).
"""
