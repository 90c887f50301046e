import pytest
import torch

from interp_steer import SteeringVector, model_fingerprint
from interp_steer.testing import tiny_model


def _vec(model, k=1, hook="blocks.1.hook_resid_pre"):
    torch.manual_seed(1)
    return SteeringVector(
        torch.randn(k, model.cfg.d_model),
        hook,
        model_fingerprint(model),
        "manual",
        {"note": "x", "n": 3},
    )


def test_save_load_roundtrip_is_bit_exact(llama, tmp_path):
    for k in (1, 3):
        v = _vec(llama, k) * 1.2345678
        path = v.save(tmp_path / f"v{k}.safetensors")
        w = SteeringVector.load(path)
        assert torch.equal(w.directions, v.directions)
        assert w.directions.dtype == v.directions.dtype
        assert (w.hook, w.model_fingerprint, w.method, w.metadata) == (
            v.hook,
            v.model_fingerprint,
            v.method,
            v.metadata,
        )
    assert not list(tmp_path.glob(".*tmp")), "no temporary files left behind"


def test_mismatched_model_raises_unless_forced(llama):
    v = _vec(llama)
    other = tiny_model("llama", model_name="another-model")
    with pytest.raises(ValueError, match="built for"):
        v.check_compatible(other)
    v.check_compatible(other, force=True)
    wide = tiny_model("llama", d_model=32, d_head=8)
    with pytest.raises(ValueError, match="d_model"):
        v.check_compatible(wide, force=True)


def test_bad_inputs_raise(llama):
    with pytest.raises(ValueError, match="NaN"):
        SteeringVector(torch.tensor([1.0, float("nan")]), "blocks.0.hook_resid_pre")
    with pytest.raises(TypeError):
        SteeringVector(torch.tensor([1, 2]), "blocks.0.hook_resid_pre")
    with pytest.raises(ValueError, match="unknown hook"):
        _vec(llama, hook="blocks.99.hook_resid_pre").check_compatible(llama)
    with pytest.raises(ValueError, match="not an interp_steer vector"):
        import os
        import tempfile

        from safetensors.torch import save_file

        p = os.path.join(tempfile.mkdtemp(), "x.safetensors")
        save_file({"directions": torch.zeros(2)}, p)
        SteeringVector.load(p)


def test_algebra(llama):
    v, w = _vec(llama), _vec(llama) * 2
    assert torch.allclose((v + w).vector, 3 * v.vector)
    assert torch.allclose((w - v).vector, v.vector)
    assert torch.allclose((-v).vector, -v.vector)
    assert torch.allclose((0.5 * w).vector, v.vector)
    assert abs(float(v.normalized().norm()) - 1) < 1e-6
    assert abs(v.cosine(w) - 1) < 1e-9 and abs(v.cosine(-v) + 1) < 1e-9
    assert v.layer == 1 and v.k == 1
    with pytest.raises(ValueError):
        _ = v + SteeringVector(v.directions, "blocks.2.hook_resid_pre")
