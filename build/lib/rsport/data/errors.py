"""The one error type of the data pipeline."""


class DataError(ValueError):
    """Bad or missing input data; the message names the file (or folder) at fault."""
