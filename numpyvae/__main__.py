"""``python -m numpyvae``: the same as the ``numpyvae`` command."""

from .app.cli import command

if __name__ == "__main__":
    command()
