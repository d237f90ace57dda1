"""The one error hierarchy of prosemc; the CLI turns each into a one-line message and exit code 2.

Every message says what is wrong and how to fix it.
"""


class ProsemcError(Exception):
    """Base of every error prosemc raises on bad input, bad state or a wrong model."""


class InputError(ProsemcError):
    """A user-supplied input (image, question, option value) cannot be used."""


class ModelError(ProsemcError):
    """A model is missing, cannot be loaded, or does not match the data it is asked to process."""


class ModelMismatchError(ModelError):
    """The data (a .psem) was made by another model than the one given, or names one that must be given."""


class CodecError(ProsemcError):
    """Tokens or layers do not fit the codec they were given to."""


class OutputError(ProsemcError):
    """An output cannot be written: it is the input, its folder is missing, the disk is full, stdout is closed, ..."""
