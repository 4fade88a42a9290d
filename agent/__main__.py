"""``python -m agent`` runs the ``wiremesh`` command."""

from agent.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
