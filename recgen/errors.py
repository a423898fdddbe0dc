"""One exception family so callers (CLI, server, batch) can turn any bad input into a clear message."""


class RecgenError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class DataError(RecgenError):
    """A catalog, interaction file or dataset path is missing or malformed."""


class UnknownItemError(RecgenError):
    """An item id that is not in the catalog."""


class UnknownUserError(RecgenError):
    """A user id that is not in the loaded dataset."""


class IndexStaleError(RecgenError):
    """A saved retrieval index was built from another catalog or embedding model."""


class IndexCorruptError(RecgenError):
    """A saved retrieval index folder is missing files or cannot be read."""


class ModelLoadError(RecgenError):
    """A language or embedding model (or adapter) cannot be found or loaded."""


class InvalidRequestError(RecgenError):
    """A recommendation request that cannot be served as asked (bad k, empty query, ...)."""


class ConfigError(RecgenError):
    """A config file with unknown keys or wrong types."""


class UnsafeOverwriteError(DataError):
    """An output folder that holds files recgen did not write: replacing it would delete them."""


class FolderCorruptError(RecgenError):
    """A folder recgen wrote whose manifest is missing or does not match its files (a half or damaged write)."""


class SaveError(RecgenError, OSError):
    """Writing an output folder failed (full disk, read-only, no permission); the previous folder is unchanged.

    Also an ``OSError`` (same errno) so callers that handle I/O errors keep working."""


class ClusterError(RecgenError):
    """The compute cluster named for a fit (``--cluster``) cannot be reached, does not match this install, or lost
    a worker during the fit."""
