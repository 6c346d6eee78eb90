"""``python -m siamkit`` behaves like the ``siamkit`` command."""

from siamkit.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
