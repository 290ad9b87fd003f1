"""User-facing errors.

Every problem a user can cause (bad flags, bad files, a run that does not exist) raises a
subclass of :class:`LdlmError` whose message is one clear line. Front ends print that line and
exit with status 2; anything else is a bug and may show a traceback.
"""


class LdlmError(Exception):
    """A problem with the user's input or files, explained in one line."""


class ConfigError(LdlmError):
    """An invalid or inconsistent configuration value."""


class DataError(LdlmError):
    """A corpus that cannot be read or is unusable for training."""


class CheckpointError(LdlmError):
    """A checkpoint or tokenizer file that is missing, damaged, hostile or incompatible."""


class RunError(LdlmError):
    """A run that does not exist, is locked by another process, or is in the wrong state."""
