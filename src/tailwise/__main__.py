"""``python -m tailwise``: the same command line as the ``tailwise`` script."""

from tailwise.cli import main

if __name__ == "__main__":
    main()
