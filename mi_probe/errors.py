"""The library's own error types.

Every problem a user can cause (bad input, unknown names, unreadable files, a model
mi-probe cannot handle) raises a subclass of :class:`MIProbeError` with a message that says
what is wrong and what to do. The CLI prints that message and exits non-zero, never a
traceback.
"""

from __future__ import annotations


class MIProbeError(ValueError):
    """Base class of every error mi-probe raises on purpose."""


class InputError(MIProbeError):
    """Data handed to an estimator is unusable (shape, NaN/inf, too few samples, dtype)."""


class ParameterError(MIProbeError):
    """An estimator or command parameter is unknown or has a bad value."""


class UnknownEstimatorError(MIProbeError):
    """No registered estimator has the requested name."""


class PluginError(MIProbeError):
    """A plugin could not be loaded or registered."""


class FileFormatError(MIProbeError):
    """A file could not be read, or its contents are not what was expected."""


class CheckpointError(MIProbeError):
    """A model checkpoint is missing, corrupt, or of an architecture mi-probe cannot handle."""


class ResourceError(MIProbeError):
    """A job would not fit in memory (or another resource) on this machine."""
