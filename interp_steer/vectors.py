"""SteeringVector: a direction (or a k-dim subspace) tied to a hook point and a model."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor
from transformer_lens import HookedTransformer

from interp_steer._io import atomic_path

FORMAT_VERSION = 1
_LAYER_RE = re.compile(r"^blocks\.(\d+)\.")


def model_fingerprint(model: HookedTransformer) -> str:
    """Model name plus a hash of the config fields that fix the residual-stream geometry."""
    cfg = model.cfg
    keys = ("model_name", "d_model", "n_layers", "n_heads", "d_head", "d_mlp", "d_vocab", "act_fn")
    blob = json.dumps({k: getattr(cfg, k, None) for k in keys}, sort_keys=True)
    return f"{cfg.model_name}:{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def check_hook(model: HookedTransformer, hook: str) -> None:
    """Raise a ValueError/TypeError naming ``hook`` unless the model has that hook point."""
    if not isinstance(hook, str):
        raise TypeError(f"hook must be a hook name string, got {hook!r:.60}")
    if hook not in model.hook_dict:
        near = [h for h in model.hook_dict if h.endswith(hook.split(".")[-1])][:4]
        raise ValueError(
            f"unknown hook {hook!r} for {model.cfg.model_name} "
            f"({model.cfg.n_layers} layers); e.g. {near or list(model.hook_dict)[:4]}"
        )


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """A steering direction (k = 1) or low-rank subspace (k > 1) at one hook point."""

    directions: Float[Tensor, "k d_model"]
    hook: str
    model_fingerprint: str | None = None
    method: str = "manual"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        d = self.directions
        if not isinstance(d, Tensor):
            d = torch.as_tensor(d)
        if d.ndim == 1:
            d = d[None]
        if d.ndim != 2 or d.shape[0] == 0:
            raise ValueError(f"directions must be [k, d_model], got shape {tuple(d.shape)}")
        if not d.is_floating_point():
            raise TypeError(f"directions must be floating point, got {d.dtype}")
        if not torch.isfinite(d).all():
            raise ValueError("steering vector contains NaN or inf")
        object.__setattr__(self, "directions", d.detach())

    # -- shape helpers
    @property
    def k(self) -> int:
        return self.directions.shape[0]

    @property
    def d_model(self) -> int:
        return self.directions.shape[1]

    @property
    def vector(self) -> Float[Tensor, "d_model"]:
        if self.k != 1:
            raise ValueError(f"this is a rank-{self.k} subspace, not a single vector")
        return self.directions[0]

    @property
    def layer(self) -> int | None:
        m = _LAYER_RE.match(self.hook)
        return int(m.group(1)) if m else None

    def norm(self) -> Tensor:
        return self.directions.norm(dim=-1)

    # -- algebra
    def _with(self, directions: Tensor, **kw) -> SteeringVector:
        return replace(self, directions=directions, **kw)

    def _check_same_space(self, other: SteeringVector) -> None:
        if other.hook != self.hook or other.directions.shape != self.directions.shape:
            raise ValueError(
                f"cannot combine vectors at {self.hook} {tuple(self.directions.shape)} "
                f"and {other.hook} {tuple(other.directions.shape)}"
            )

    def __add__(self, other: SteeringVector) -> SteeringVector:
        self._check_same_space(other)
        return self._with(self.directions + other.directions.to(self.directions), method="sum")

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        self._check_same_space(other)
        return self._with(self.directions - other.directions.to(self.directions), method="sum")

    def __mul__(self, scale: float) -> SteeringVector:
        return self._with(self.directions * float(scale))

    __rmul__ = __mul__

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    def normalized(self) -> SteeringVector:
        """Each direction scaled to unit norm."""
        return self._with(self.directions / self.norm().clamp_min(1e-12)[:, None])

    def to(self, *args, **kwargs) -> SteeringVector:
        return self._with(self.directions.to(*args, **kwargs))

    def cosine(self, other: SteeringVector | Tensor) -> float:
        """Cosine similarity between two single vectors."""
        b = other.vector if isinstance(other, SteeringVector) else other.flatten()
        a = self.vector
        return float(torch.nn.functional.cosine_similarity(a.double(), b.double().to(a.device), 0))

    # -- model checks
    def check_compatible(self, model: HookedTransformer, force: bool = False) -> None:
        """Raise if the vector cannot be applied to ``model`` (``force`` skips the fingerprint)."""
        check_hook(model, self.hook)
        if self.d_model != model.cfg.d_model:
            raise ValueError(
                f"vector has d_model={self.d_model} but {model.cfg.model_name} has "
                f"d_model={model.cfg.d_model}"
            )
        fp = model_fingerprint(model)
        if not force and self.model_fingerprint is not None and self.model_fingerprint != fp:
            raise ValueError(
                f"vector was built for {self.model_fingerprint}, not {fp}; "
                "pass force=True to apply it anyway"
            )

    # -- persistence
    def save(self, path: str | Path) -> Path:
        """Write safetensors (the tensor, bit-exact) with JSON metadata in its header."""
        path = Path(path)
        header = {
            "format_version": str(FORMAT_VERSION),
            "hook": self.hook,
            "model_fingerprint": self.model_fingerprint or "",
            "method": self.method,
            "metadata": json.dumps(self.metadata, sort_keys=True, default=str),
        }
        with atomic_path(path) as tmp:
            save_file({"directions": self.directions.contiguous().cpu()}, str(tmp), header)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> SteeringVector:

        if not Path(path).is_file():
            raise FileNotFoundError(f"no steering-vector file at {path}")
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                header = f.metadata() or {}
                if "hook" not in header or "directions" not in f.keys():
                    raise ValueError(
                        f"{path} is not an interp_steer vector file (no hook or directions in it)"
                    )
                directions = f.get_tensor("directions")
        except (SafetensorError, OSError, RuntimeError) as e:
            raise ValueError(
                f"{path} is not a readable safetensors vector file "
                f"(truncated, empty or another format?): {e}"
            ) from None
        return cls(
            directions=directions,
            hook=header["hook"],
            model_fingerprint=header.get("model_fingerprint") or None,
            method=header.get("method", "manual"),
            metadata=json.loads(header.get("metadata", "{}")),
        )

    def __repr__(self) -> str:
        norms = ", ".join(f"{n:.3g}" for n in self.norm().tolist()[:4])
        return (
            f"SteeringVector(method={self.method!r}, hook={self.hook!r}, k={self.k}, "
            f"d_model={self.d_model}, norm=[{norms}], model={self.model_fingerprint!r})"
        )
