"""The BGP speaker: ExaBGP 5 as a supervised child process, its config file and its API.

Kept import-free: :mod:`agent.bgp.bridge` runs as ExaBGP's API process, and everything this package
imports would add to its start-up time.
"""
