"""Encoder fixtures (tests/encoder_fixtures.py: tiny checkpoints per family, their artifacts, MiniLM)."""

from encoder_fixtures import encoder_artifact, encoder_checkpoint, minilm_artifact  # noqa: F401
