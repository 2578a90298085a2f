"""Errors of the publish package; store errors are converted at this boundary."""

from __future__ import annotations


class PublishError(Exception):
    """A publication could not be completed; no pointer names an object that was not written."""


class ImmutableConflict(PublishError):
    """An immutable object already exists with different bytes (an engine changed since it was written)."""
