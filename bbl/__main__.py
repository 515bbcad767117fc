"""`python -m bbl` runs the command-line interface."""

from bbl.cli import main

if __name__ == "__main__":
    main()
