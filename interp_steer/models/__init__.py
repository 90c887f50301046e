"""Models: the registry of embedded GGUF models, conversion to TransformerLens and its cache
(`registry`), and the fast forward path (`fast`).

The names below are the registry's public face; ``from interp_steer.models import load_model``.
"""

from interp_steer._io import cache_dir
from interp_steer.models.registry import (
    DEFAULT_MODEL,
    EMBEDDED,
    REFERENCE_TEXT,
    EmbeddedModel,
    chat,
    gguf_path,
    load_model,
    parity_with_hf,
)

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED",
    "REFERENCE_TEXT",
    "EmbeddedModel",
    "cache_dir",
    "chat",
    "gguf_path",
    "load_model",
    "parity_with_hf",
]
