"""One exception type for every user-facing failure: the CLI prints its message on one line."""


class MoeprofError(Exception):
    """An error the user can act on; its message is a single clear line."""
