"""Exceptions that carry the command-line exit code they map to."""


class EdgemiaError(Exception):
    """Base class of the errors edgemia raises on purpose."""

    exit_code = 3


class InputError(EdgemiaError):
    """Invalid usage or invalid input: a file, field or value the user can fix."""

    exit_code = 2


class RecordsError(InputError):
    """A records file that is missing, unreadable or inconsistent."""


class ModelFormatError(InputError):
    """A model file that is missing, truncated, corrupt or uses unsupported features."""


class UnsupportedModelError(ModelFormatError):
    """A well-formed model that uses an op, type or parameter the native kernel does not run."""


class DeviceError(EdgemiaError):
    """A board that cannot be reached, or a command that failed or timed out on it."""

    exit_code = 4


class HostKeyError(DeviceError):
    """The board's SSH host key is unknown or does not match the expected one."""


class DeviceConnectionError(DeviceError):
    """The SSH connection could not be opened, or was lost."""


class DeviceTimeout(DeviceError):
    """A command on the board did not finish within its time limit."""
