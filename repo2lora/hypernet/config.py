"""What every generator's config shares: JSON for the checkpoint card (tuples as lists) and a
digest of it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any, Self, cast


class JsonConfig:
    """Mixed into a frozen config dataclass whose sequence fields are tuples."""

    def to_json(self) -> dict[str, object]:
        d = asdict(cast(Any, self))
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Self:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()
