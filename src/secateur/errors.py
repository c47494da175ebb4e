"""Exceptions raised by secateur. Each names the problem and says what to do next."""


class SecateurError(Exception):
    """Base class of every error secateur raises on purpose."""


class InvalidSparsityError(SecateurError, ValueError):
    """A sparsity or target outside its valid range."""


class UnknownCriterionError(SecateurError, ValueError):
    """An importance criterion that is not registered."""


class RecipeError(SecateurError, ValueError):
    """A recipe file that does not validate (misspelt key, unknown method, bad value)."""


class ModelFileError(SecateurError, FileNotFoundError):
    """A model folder, weights file or manifest that is missing or unreadable."""


class GraphCaptureError(SecateurError, RuntimeError):
    """The model's computation could not be captured from the example inputs."""


class PruningError(SecateurError, RuntimeError):
    """A pruning request that cannot be met; the model is left unchanged."""
