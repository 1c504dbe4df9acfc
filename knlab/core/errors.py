"""Errors that reach users as one clear line (CLI: stderr + exit code 2; UI: a message, no traceback)."""


class KnlabError(ValueError):
    """Base class: anything raised as a KnlabError is the user's input or environment, not a bug."""


class InputError(KnlabError):
    """The request itself is wrong (empty prompt, no [MASK] for a masked model, unknown token, ...)."""


class RequestDropped(KnlabError):
    """Its client went away while the request waited (for the model, or for an identical request's result): it
    was never run for it."""
