"""What the agent programs into this machine's kernel: the Loc-RIB's winners as routes under the
agent's own protocol number (:mod:`.fib`) and the VIP addresses on ``lo`` (:mod:`.loopback`). Both own
only what they created, and reconcile rather than patch, so a restart or a crash leaves nothing stale.
"""
