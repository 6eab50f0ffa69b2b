"""Typed errors. Every user-facing failure is one of these; the CLI maps them to exit code 2."""


class GenuineError(Exception):
    """Base class for errors that carry a message meant for the user."""


class InputError(GenuineError, ValueError):
    """A file or argument given by the user cannot be used (not an image, wrong channels, ...)."""


class ModelLoadError(GenuineError):
    """A model folder is missing, incomplete, tampered with, or holds unsafe content."""


class StoreError(GenuineError):
    """The store is busy, inconsistent, or was asked for something it does not hold."""
