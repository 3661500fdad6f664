"""The one error the Space shows as is."""


class SpaceError(Exception):
    """A problem to show the user as is (bad input, unknown model): the message says what and what to do."""
