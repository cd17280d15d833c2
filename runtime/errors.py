"""Errors that reach users.

`ModelkilnError` is bad input or a bad artifact: the CLI prints its message on one line and exits 2.
Messages name the offending value and the fix, e.g.
``ModelkilnError("artifact file model.onnx.data fails its sha256 check; re-export the artifact")``.
Internal invariants use `assert` instead.
"""


class ModelkilnError(ValueError):
    """Bad user input or a bad artifact (CLI exit code 2)."""


class ArtifactError(ModelkilnError):
    """An artifact directory that is missing, incomplete, tampered with or unsafe to load."""
