"""The pipeline's exceptions.

Every error a user can cause derives from :class:`PipelineError`, and also from the builtin
that describes it best, so callers may catch either. The CLI prints ``str(error)`` as one line
and exits non-zero: messages name the file, the value and the fix.
"""


class PipelineError(Exception):
    """Base class of every error roadcover raises on purpose."""


class ConfigError(PipelineError, ValueError):
    """A configuration file is missing, unreadable or violates the config schema."""


class ContractError(PipelineError, ValueError):
    """A table does not match its data contract; the message lists every problem."""


class InputDataError(PipelineError, ValueError):
    """An input file is missing, corrupt or holds nothing usable."""


class OutputExistsError(PipelineError, FileExistsError):
    """An output folder already holds files that the command would replace."""
