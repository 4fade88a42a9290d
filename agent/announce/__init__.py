"""Which VIPs and routes this machine announces, and why.

:mod:`.planner` is the pure decision (enabled, assigned, healthy, or held under the gossip-informed
holdoff); :mod:`.driver` runs it on live inputs and publishes the decisions; :mod:`.status` is the read
model the API, the UI and the BGP speaker see, so none of them depends on the driver.
"""
