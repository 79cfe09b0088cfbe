"""``python -m ebind`` runs the command line."""

from ebind.cli import main

if __name__ == "__main__":
    main(prog_name="ebind")
