import numpy as np
import pytest
import torch

from interp_steer import SteeringVector, build_vector, model_fingerprint, steer
from interp_steer.activations import forward_kwargs, tokenize
from interp_steer.export.llama_cpp import export_llama_cpp, llama_cpp_layer, load_llama_cpp
from interp_steer.testing import SENTIMENT_PAIRS

PAIRS = SENTIMENT_PAIRS[:3]


def _foreign_file(path, directions: dict[int, np.ndarray], arch="controlvector"):
    """A control vector written the way repeng / llama.cpp write it (no interp_steer keys)."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_string(f"{arch}.model_hint", "llama")
    w.add_uint32(f"{arch}.layer_count", len(directions))
    for il, d in directions.items():
        w.add_tensor(f"direction.{il}", d.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_layer_mapping():
    assert llama_cpp_layer("blocks.5.hook_resid_pre") == 4
    assert llama_cpp_layer("blocks.5.hook_resid_post") == 5
    for bad in (
        "blocks.1.hook_resid_pre",
        "blocks.0.hook_resid_post",
        "blocks.2.attn.hook_z",
        "blocks.2.hook_resid_mid",
    ):
        with pytest.raises(ValueError):
            llama_cpp_layer(bad)


def test_export_is_a_llama_cpp_file_and_round_trips(llama, tmp_path):
    import gguf

    v = build_vector(llama, PAIRS, "blocks.2.hook_resid_pre", progress=False)
    path = export_llama_cpp(v, tmp_path / "v.gguf", alpha=0.3)
    r = gguf.GGUFReader(str(path))
    assert r.fields["general.architecture"].contents() == "controlvector"
    assert r.fields["controlvector.layer_count"].contents() == 1
    (t,) = r.tensors
    assert t.name == "direction.1" and t.tensor_type == gguf.GGMLQuantizationType.F32
    assert list(t.shape) == [llama.cfg.d_model]
    (w,) = load_llama_cpp(path, llama)
    assert torch.equal(w.vector, (v.vector.double() * 0.3).float())
    assert (w.hook, w.model_fingerprint, w.method) == (v.hook, v.model_fingerprint, "mean_diff")
    assert w.metadata["llama_cpp_layer"] == 1 and w.metadata["alpha"] == pytest.approx(0.3)


def test_foreign_file_steers_the_output_of_its_layer(llama, tmp_path):
    """direction.il is added to layer il's output: resid_post of il = resid_pre of il + 1."""
    d = np.random.default_rng(0).standard_normal(llama.cfg.d_model) * 5
    (w,) = load_llama_cpp(_foreign_file(tmp_path / "f.gguf", {1: d}), llama)
    assert w.hook == "blocks.1.hook_resid_post" and w.method == "llama_cpp"
    assert w.model_fingerprint == model_fingerprint(llama)
    same = SteeringVector(torch.tensor(d, dtype=torch.float32), "blocks.2.hook_resid_pre")
    batch = tokenize(llama, ["hello there", "a"])
    outs = []
    with torch.no_grad():
        for vec in (w, same):
            with steer(llama, vec, 1.0):
                outs.append(llama(batch.tokens, **forward_kwargs(batch)))
        base = llama(batch.tokens, **forward_kwargs(batch))
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    assert not torch.allclose(outs[0], base, atol=1e-2)


def test_several_layers_in_one_file(llama, tmp_path):
    vs = [
        build_vector(llama, PAIRS, h, progress=False)
        for h in ("blocks.2.hook_resid_post", "blocks.1.hook_resid_post")
    ]
    loaded = load_llama_cpp(export_llama_cpp(vs, tmp_path / "two.gguf"))
    assert [v.hook for v in loaded] == ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"]
    assert torch.equal(loaded[1].vector, vs[0].vector)


def test_bad_input(llama, tmp_path):
    v = build_vector(llama, PAIRS, "blocks.2.hook_resid_pre", progress=False)
    with pytest.raises(ValueError, match="subspace"):
        export_llama_cpp(
            build_vector(
                llama, PAIRS, "blocks.2.hook_resid_pre", method="pca", k=2, progress=False
            ),
            tmp_path / "x.gguf",
        )
    with pytest.raises(ValueError, match="add them first"):
        export_llama_cpp(
            [v, SteeringVector(v.vector, "blocks.1.hook_resid_post")], tmp_path / "x.gguf"
        )
    with pytest.raises(ValueError, match="residual stream"):
        export_llama_cpp(SteeringVector(v.vector, "blocks.2.attn.hook_z"), tmp_path / "x.gguf")
    with pytest.raises(ValueError, match="no vectors"):
        export_llama_cpp([], tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()  # nothing half-written
    with pytest.raises(FileNotFoundError):
        load_llama_cpp(tmp_path / "missing.gguf")
    with pytest.raises(ValueError, match="not a llama.cpp control vector"):
        load_llama_cpp(_foreign_file(tmp_path / "m.gguf", {1: np.zeros(4)}, arch="llama"))
    with pytest.raises(ValueError, match="does not fit"):
        load_llama_cpp(_foreign_file(tmp_path / "d.gguf", {1: np.zeros(7)}), llama)
    with pytest.raises(ValueError, match="does not fit"):
        load_llama_cpp(_foreign_file(tmp_path / "l.gguf", {9: np.zeros(llama.cfg.d_model)}), llama)
