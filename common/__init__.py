"""Neutral helpers that gossip, transit and the agent share: addresses, child processes, restart
backoff, netlink calls.

Nothing here knows about a mesh; everything above may import it, and it imports nothing of ours.
"""
