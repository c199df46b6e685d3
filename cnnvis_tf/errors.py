"""Exceptions raised for bad user input.

Library code raises these with one clear sentence naming the problem and the fix; the
`experiments/` scripts catch :class:`InputError` and print that sentence as one line.
"""


class InputError(ValueError):
    """A user-supplied value (flag, array, file, model) is unusable as given."""


class DataFilesError(InputError, FileNotFoundError):
    """Dataset files are missing, corrupt or of the wrong shape."""
