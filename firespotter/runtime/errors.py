"""Errors a user can act on. The CLI prints them as one line (no traceback) and exits non-zero."""

from __future__ import annotations


class FirespotterError(Exception):
    """A problem with the user's input or environment: says what is wrong and, where known, how to fix it."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class RunFailure(FirespotterError):
    """A run that started and then could not go on (the source failed, inference kept failing). Exit status 1,
    so a service manager restarts it; status 2 stays for input it cannot accept (RestartPreventExitStatus=2)."""

    exit_code = 1


class ConfigError(FirespotterError):
    """A configuration file or flag that cannot be accepted."""


class SourceError(FirespotterError):
    """A source that cannot be opened: missing file, unknown scheme, empty folder."""


class PluginError(FirespotterError):
    """An unknown or unavailable plugin component (model, backend, sink, ...)."""
