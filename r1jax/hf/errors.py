"""The one error type of checkpoint reading."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as the decoder expects; the message names the file,
    the key and what was expected."""
