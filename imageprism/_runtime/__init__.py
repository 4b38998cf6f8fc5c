"""Model runtime: where model files come from and how ONNX sessions are run.

Holds the settings every model-backed dimension shares. Constructing it is cheap:
nothing is downloaded and no session is opened until a dimension asks for one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ModelRuntime"]


@dataclasses.dataclass
class ModelRuntime:
    """Settings shared by the model-backed dimensions of one ``ImagePrism``.

    ``cache_dir``: where downloaded models live (default: the platform's user cache).
    ``offline``: use the local cache only (``None``: follow ``HF_HUB_OFFLINE``).
    ``providers``: onnxruntime execution providers (default: CPU).
    ``threads``: intra-op threads per session (default: onnxruntime's choice).
    """

    cache_dir: str | Path | None = None
    offline: bool | None = None
    providers: Sequence[str] | None = None
    threads: int | None = None
