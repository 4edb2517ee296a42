"""Errors a request or a round can cause; the servicer maps each to a gRPC status."""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of the errors a request can cause; the servicer maps each to a status."""


class PermissionDeniedError(ProtocolError):
    """The caller may not act as the domain it names."""


class InvalidRequestError(ProtocolError):
    """A request field is malformed."""


class WrongStageError(ProtocolError):
    """The request does not fit the run's current stage or task."""


class DuplicateError(ProtocolError):
    """The request repeats one that was already applied."""


class QuorumError(RuntimeError):
    """Too few domains took part before a deadline."""


class StopRequestedError(RuntimeError):
    """The coordinator was asked to stop (SIGTERM) and abandoned the task in flight."""
