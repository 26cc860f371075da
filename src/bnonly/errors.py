"""The one exception type every expected failure of bnonly derives from.

Each message is one line that names what was wrong (a value, a file, a store). The command line
prints it as `bnonly: error: ...` and exits non-zero; Python callers catch `bnonly.BnonlyError`.
"""
import re


class BnonlyError(Exception):
    """Bad input (ConfigError), missing or corrupt data (DataError), an unusable results store
    (StoreError), an output that could not be written (OutputError), or too little memory
    (OutOfMemory)."""


class ConfigError(BnonlyError, ValueError):
    """A bad configuration value, flag or file; its message is shown to the user as one line."""


class OutputError(BnonlyError, RuntimeError):
    """A result that was computed but could not be written (it was printed or stored first)."""


class OutOfMemory(BnonlyError, MemoryError):
    """An allocation failed; the message names the size asked for and what to change."""


def out_of_memory(e: BaseException) -> OutOfMemory | None:
    """The one-line OutOfMemory for an allocation failure (PyTorch's RuntimeError, MemoryError),
    naming the size asked for; None for other errors."""
    text = str(e)
    if not (isinstance(e, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()):
        return None
    size = re.search(r"allocate (\d+) bytes", text) or re.search(r"allocate ([\d.]+ [KMGT]i?B)", text)
    asked = f" ({int(size.group(1)) / 2**30:.1f} GiB asked for)" if size and size.group(1).isdigit() else \
        (f" ({size.group(1)} asked for)" if size else "")
    return OutOfMemory(f"out of memory{asked}: use a smaller --width/--depth, or --group-size 1 (fewer models "
                       "trained at once)")
