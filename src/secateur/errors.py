"""Exceptions raised by secateur. Each names the problem and says what to do next.

Every error a user can cause is a :class:`SecateurError`; each subclass also inherits the builtin
exception a caller would expect (``ValueError`` for a bad value, ``TypeError`` for a wrong kind of
input), so ``except ValueError`` keeps working. The command line exits with status 2 on any of them.
"""


class SecateurError(Exception):
    """Base class of every error secateur raises on purpose."""


class InvalidParameterError(SecateurError, ValueError):
    """A method, criterion or option value that is not valid (the message names the field and the fix)."""


class InvalidSparsityError(InvalidParameterError):
    """A sparsity or target outside its valid range."""


class UnknownCriterionError(InvalidParameterError):
    """An importance criterion that is not registered."""


class UnknownMethodError(InvalidParameterError):
    """A pruning method name that is not registered."""


class InputError(SecateurError, TypeError):
    """Example inputs or calibration data of a kind secateur cannot use."""


class RecipeError(SecateurError, ValueError):
    """A recipe file that does not validate (misspelt key, unknown method, bad value)."""


class ModelFileError(SecateurError, FileNotFoundError):
    """A model folder, weights file, manifest or checkpoint that is missing, damaged or does not fit."""


class CheckpointError(ModelFileError):
    """A training checkpoint that is damaged or does not fit this run (model, optimizer, hyper-parameters)."""


class OutputExistsError(SecateurError, FileExistsError):
    """An output folder that holds files secateur did not write (pass overwrite / --overwrite to write there)."""


class OutputError(SecateurError, OSError):
    """A file or folder secateur cannot write (no permission, no space left, a path through a file)."""


class FolderLockedError(SecateurError, BlockingIOError):
    """Another process is writing the same folder at this moment."""


class NotExpressibleError(SecateurError, ValueError):
    """A pruned shape that a Hugging Face config cannot express, so no checkpoint transformers loads is written."""


class MissingDependencyError(SecateurError, ImportError):
    """An optional package needed for this feature is not installed."""


class GraphCaptureError(SecateurError, RuntimeError):
    """The model's computation could not be captured from the example inputs."""


class PruningError(SecateurError, RuntimeError):
    """A pruning request that cannot be met; the model is left unchanged."""
