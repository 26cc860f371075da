"""The one exception type every expected failure of bnonly derives from.

Each message is one line that names what was wrong (a value, a file, a store). The command line
prints it as `bnonly: error: ...` and exits non-zero; Python callers catch `bnonly.BnonlyError`.
"""


class BnonlyError(Exception):
    """Bad input (ConfigError), missing or corrupt data (DataError), an unusable results store
    (StoreError) or an output that could not be written (OutputError)."""
