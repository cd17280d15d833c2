"""Progress for long steps: a spinner while it runs, a `✓ step (12.3 s)` line when done; silent with quiet.

    with Progress(quiet=False) as progress:
        with progress.step("loading SmolLM2"):
            ...
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator


class Progress:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._console = None
        if not quiet:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        if self.quiet:
            yield
            return
        start = time.perf_counter()
        with self._console.status(f"{label}…", spinner="dots"):
            yield
        self._console.print(f"[green]✓[/green] {label} ({time.perf_counter() - start:.1f} s)")

    def info(self, message: str) -> None:
        if not self.quiet:
            self._console.print(message, soft_wrap=True, markup=False)


def quiet_libraries(quiet: bool) -> None:
    """transformers and huggingface_hub draw their own tqdm bars; keep CI logs clean with --quiet."""
    if quiet:
        import os

        import transformers

        os.environ["TQDM_DISABLE"] = "1"  # GGUF de-quantization draws a bare tqdm bar transformers cannot silence
        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
    sys.stderr.flush()
