"""The project's error type: one line that names the problem and the fix.

The CLI prints `str(error)` on stderr and exits with code 2; it never shows a traceback for these.
"""

from __future__ import annotations


class StitchError(ValueError):
    """A problem with the user's input, files or models, with a message that says what to do."""


class InputImageError(StitchError):
    """The input photo cannot be used."""


class CameraPathError(StitchError):
    """A camera path (JSON) is malformed."""


class ModelUnavailableError(StitchError):
    """A model's weights are not available (offline, missing path)."""
