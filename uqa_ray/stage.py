"""`Stage`: one stage's output folder, keyed by the content hash of what it is made from, and complete when
its marker files exist.

Every builder writes its markers last (or its whole folder atomically, `io.atomic_path`), so a folder
with all its markers is finished and a rerun reuses it; any marker missing and the stage builds again.
`get` also checks the markers after a build, so a builder that forgets one fails at once instead of
being rebuilt on every run (or, worse, reused half-made: the bug `pipeline.question_set`'s links had).
A stage whose build can end without an output (pretraining: a diverged or failed run) asks `done()` and
calls `check()` after its successful builds instead. Used by the lab's synth, prepare and questions, by
pretraining runs and by LM teaching; it sits at the package top so every stage below the lab can use it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str  # as the console says it ("prepare: reusing ...")
    folder: Path  # <workdir>/<stage>/<name>-<content hash>
    markers: tuple[str, ...]  # files (relative to folder) whose presence marks it complete

    def missing(self) -> list[str]:
        return [m for m in self.markers if not (self.folder / m).exists()]

    def done(self) -> bool:
        return not self.missing()

    def check(self) -> None:
        """After a build that succeeded: every marker must be there."""
        if gone := self.missing():
            raise RuntimeError(f"{self.name}: {self.folder} was built without {gone}")

    def get(self, build: Callable[[], Any], say: Callable[[str], None]) -> Path:
        """The folder: reused when complete, else built by `build()` (which writes it) and checked."""
        if self.done():
            say(f"{self.name}: reusing {self.folder}")
            return self.folder
        build()
        self.check()
        return self.folder
