"""The one exception every `cms` command raises for a failure the user can act on."""


class CliError(Exception):
    """A failure the user can act on: printed as one line, exit 1."""
