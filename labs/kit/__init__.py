"""What the tests and the lab scenarios share: namespaces, BIRD, polling, the namespace and loopback labs.

Scenarios (``labs/*.py``) build on this; tests import only from here, never a scenario.
"""
