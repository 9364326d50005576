"""Errors a user sees as one line; each carries its exit code (README: Commands, exit codes)."""


class AitkError(Exception):
    """A failure explained in one line; exits 1."""

    exit_code = 1


class InputError(AitkError):
    """One input (a file, a row, a field) is not what was expected."""


class DeviceError(AitkError):
    """`--device cuda` was asked for and CUDA cannot be used; exits 4."""

    exit_code = 4


class ParityError(AitkError):
    """The ONNX export does not reproduce the torch model."""
