"""transit: WireGuard peers, direct-path monitoring and relay selection.

Sans-I/O cores: ``meta`` (gossip metadata, mesh-address claims), ``pathmon`` (per-peer probes, RTT,
loss, up/down), ``reachability`` (the vector each machine publishes), ``relay`` (which relay, with
hysteresis), ``peers`` (who is a peer, which endpoint), ``desired`` (device and kernel state from the
chosen routes), ``wgdevice`` (desired -> actual peer reconcile), the ``uapi`` codec, and the plain data of
``config`` and ``report``. I/O: ``keys`` and ``claimfile`` (state directory), ``uapi.UapiClient`` and
``wggo`` (the wireguard-go child process), ``kernel`` (link, addresses, routes, forwarding), and
``driver``, the Trio task that runs it all for one machine.
"""
