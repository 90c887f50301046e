"""llama.cpp control vectors: the GGUF files repeng and ``llama-cvector-generator`` write.

A control-vector file holds float32 tensors ``direction.{il}`` (il = 1 .. n_layers - 1) that
llama.cpp adds, times the user's scale, to the output of decoder layer ``il`` at every
position (``llama_adapter_cvec::apply_to``). The output of layer il is TransformerLens's
``blocks.{il}.hook_resid_post``: the same tensor as ``blocks.{il+1}.hook_resid_pre`` and HF's
``hidden_states[il + 1]``. Layer 0's output has no slot (llama.cpp never steers it), so a
vector at ``blocks.0.hook_resid_post`` or ``blocks.{0,1}.hook_resid_pre`` cannot be exported,
and neither can a hook that is not the residual stream.

``export_llama_cpp`` also writes the vectors' hooks, fingerprint and method under
``interp_steer.*`` keys (llama.cpp ignores them), so ``load_llama_cpp`` gives our own files
back exactly; a foreign file loads at ``blocks.{il}.hook_resid_post``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np
import torch

from interp_steer._io import atomic_path
from interp_steer.vectors import SteeringVector, model_fingerprint

ARCH = "controlvector"
_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")
_DIRECTION = re.compile(r"^direction\.(\d+)$")


def llama_cpp_layer(hook: str) -> int:
    """The llama.cpp layer index ``il`` whose output is the residual at ``hook``."""
    m = _RESID.match(hook)
    if m is None:
        raise ValueError(
            f"llama.cpp control vectors live on the residual stream between "
            f"layers; {hook!r} is not blocks.L.hook_resid_pre/post"
        )
    layer, where = int(m.group(1)), m.group(2)
    il = layer - 1 if where == "pre" else layer
    if il < 1:
        raise ValueError(
            f"{hook} is the output of layer {il}; llama.cpp steers layers >= 1 "
            "(blocks.1.hook_resid_post = blocks.2.hook_resid_pre is the first)"
        )
    return il


def export_llama_cpp(
    vectors: SteeringVector | Sequence[SteeringVector],
    path: str | Path,
    alpha: float = 1.0,
    model_hint: str | None = None,
) -> Path:
    """Write ``alpha`` x each vector as a llama.cpp control vector (one direction per layer).

    Use it with ``llama-cli -m model.gguf --control-vector-scaled file.gguf 1.0``.
    ``model_hint`` is informational (llama.cpp does not check it); by default the model name
    from the vectors' fingerprint.
    """
    vectors = [vectors] if isinstance(vectors, SteeringVector) else list(vectors)
    if not vectors:
        raise ValueError("no vectors to export")
    by_layer: dict[int, SteeringVector] = {}
    for v in vectors:
        if v.k != 1:
            raise ValueError(
                f"a control vector is one direction per layer; {v.hook} holds a "
                f"rank-{v.k} subspace (export alpha-weighted single vectors)"
            )
        il = llama_cpp_layer(v.hook)
        if il in by_layer:
            raise ValueError(
                f"two vectors for llama.cpp layer {il} ({by_layer[il].hook}, "
                f"{v.hook}); add them first"
            )
        by_layer[il] = v
    if len({v.d_model for v in vectors}) != 1:
        raise ValueError("vectors of different d_model cannot share one file")
    fingerprints = {v.model_fingerprint for v in vectors} - {None}
    if len(fingerprints) > 1:
        raise ValueError(f"vectors from different models: {sorted(fingerprints)}")
    fp = next(iter(fingerprints), None)
    hint = model_hint or (fp.split(":")[0] if fp else "unknown")

    path = Path(path)
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), ARCH)
        w.add_string(f"{ARCH}.model_hint", hint)
        w.add_uint32(f"{ARCH}.layer_count", len(by_layer))
        w.add_string(
            "interp_steer.hooks", json.dumps({str(il): v.hook for il, v in by_layer.items()})
        )
        w.add_string("interp_steer.model_fingerprint", fp or "")
        w.add_string(
            "interp_steer.methods", json.dumps({str(il): v.method for il, v in by_layer.items()})
        )
        w.add_float32("interp_steer.alpha", float(alpha))
        for il in sorted(by_layer):
            d = (by_layer[il].vector.double() * float(alpha)).float().cpu().numpy()
            w.add_tensor(f"direction.{il}", np.ascontiguousarray(d, dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


def load_llama_cpp(path: str | Path, model=None) -> list[SteeringVector]:
    """The directions of a control-vector GGUF as SteeringVectors, in layer order.

    With ``model``, each vector is checked against it (d_model, layer range) and takes its
    fingerprint when the file carries none.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    r = gguf.GGUFReader(str(path))

    def field(key: str):
        f = r.fields.get(key)
        return None if f is None else f.contents()

    if field("general.architecture") != ARCH:
        raise ValueError(
            f"{path} is not a llama.cpp control vector "
            f"(general.architecture={field('general.architecture')!r})"
        )
    hooks = json.loads(field("interp_steer.hooks") or "{}")
    methods = json.loads(field("interp_steer.methods") or "{}")
    fp = field("interp_steer.model_fingerprint") or None
    if fp is None and model is not None:
        fp = model_fingerprint(model)
    found = []
    for t in r.tensors:
        m = _DIRECTION.match(t.name)
        if m is None:
            raise ValueError(f"{path}: unexpected tensor {t.name!r} in a control vector")
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise ValueError(f"{path}: {t.name} is {t.tensor_type.name}, expected F32")
        found.append((int(m.group(1)), torch.from_numpy(np.array(t.data, dtype=np.float32))))
    if not found:
        raise ValueError(f"{path} holds no direction.N tensors")
    out = []
    for il, d in sorted(found, key=lambda x: x[0]):
        if model is not None and (d.shape[0] != model.cfg.d_model or il >= model.cfg.n_layers):
            raise ValueError(
                f"{path}: direction.{il} (d={d.shape[0]}) does not fit "
                f"{model.cfg.model_name} (d_model={model.cfg.d_model}, "
                f"{model.cfg.n_layers} layers)"
            )
        out.append(
            SteeringVector(
                d,
                hooks.get(str(il), f"blocks.{il}.hook_resid_post"),
                fp,
                methods.get(str(il), "llama_cpp"),
                {
                    "source": str(path),
                    "model_hint": field(f"{ARCH}.model_hint"),
                    "llama_cpp_layer": il,
                    "alpha": field("interp_steer.alpha"),
                },
            )
        )
    return out
