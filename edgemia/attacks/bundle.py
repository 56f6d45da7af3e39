"""The input every attack takes: the target's capture and which records are members."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgemia.errors import InputError
from edgemia.runtime.capture import Capture


@dataclass
class CaptureBundle:
    """Captures of one variant over the same records, in the same order."""

    target: Capture
    member: np.ndarray  # bool [n]: True for the target's training records

    def __post_init__(self) -> None:
        self.member = np.asarray(self.member, dtype=bool)
        if self.member.shape != (len(self.target),):
            raise InputError(
                f"'member' has shape {self.member.shape}, but the target capture has "
                f"{len(self.target)} records"
            )
        if self.member.all() or not self.member.any():
            raise InputError("'member' must mark at least one member and one non-member record")
