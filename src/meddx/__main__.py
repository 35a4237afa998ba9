"""``python -m meddx``: the same command line as the ``meddx`` script."""

from meddx.cli import main

if __name__ == "__main__":
    main()
