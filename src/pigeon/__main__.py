"""``python -m pigeon``: the command line (what the ``pigeon`` script runs)."""

from pigeon.cli import main

if __name__ == "__main__":
    main()
