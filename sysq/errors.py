"""Errors a user can act on. Each message names the problem and the fix; the CLI prints it and exits 2."""


class SysqError(Exception):
    """Bad input: a missing file, an unknown recipe field, an unsupported model, empty data."""


class ModelNotFound(SysqError, FileNotFoundError):
    pass


class UnsupportedArchitecture(SysqError):
    pass


class DataNotFound(SysqError, FileNotFoundError):
    pass


class NonFiniteError(SysqError, ArithmeticError):
    """NaN or inf where numbers must be finite (activations, losses)."""
