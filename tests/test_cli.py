import pickle

import pytest

from interp_steer import SteeringVector, cli
from interp_steer.testing import tiny_model


@pytest.fixture
def tiny_loader(monkeypatch):
    model = tiny_model("llama")
    monkeypatch.setattr("interp_steer.load_model", lambda *a, **k: model)
    return model


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ["build", "generate", "sweep", "identifiability", "sae-train", "figures"]:
        assert cmd in out


def test_build_then_generate(tiny_loader, tmp_path, capsys):
    out = tmp_path / "v.safetensors"
    cli.main(["build", "--data", "sentiment", "--hook", "blocks.1.hook_resid_pre", "-o", str(out)])
    v = SteeringVector.load(out)
    assert v.method == "mean_diff" and v.hook == "blocks.1.hook_resid_pre"
    cli.main(
        [
            "generate",
            "--prompt",
            "hi",
            "--vector",
            str(out),
            "--alpha",
            "0,2",
            "--max-new-tokens",
            "3",
        ]
    )
    text = capsys.readouterr().out
    assert "alpha=+0" in text and "alpha=+2" in text


def test_build_exports_llama_cpp_control_vector(tiny_loader, tmp_path, capsys):
    from interp_steer.control_vectors import load_llama_cpp

    out, gg = tmp_path / "v.safetensors", tmp_path / "v.gguf"
    cli.main(
        [
            "build",
            "--hook",
            "blocks.2.hook_resid_pre",
            "-o",
            str(out),
            "--gguf",
            str(gg),
            "--gguf-alpha",
            "2",
        ]
    )
    (w,) = load_llama_cpp(gg)
    assert w.metadata["llama_cpp_layer"] == 1
    assert w.vector.allclose(SteeringVector.load(out).vector * 2)
    with pytest.raises(SystemExit) as e:
        cli.main(
            [
                "build",
                "--hook",
                "blocks.1.hook_resid_pre",
                "-o",
                str(tmp_path / "w"),
                "--gguf",
                str(tmp_path / "w.gguf"),
            ]
        )
    assert e.value.code == 2 and "llama.cpp steers layers >= 1" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_clear_errors(tiny_loader, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["build", "--hook", "blocks.99.hook_resid_pre", "-o", str(tmp_path / "v")])
    assert e.value.code == 2 and "unknown hook" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(
            [
                "build",
                "--data",
                "no-such-data",
                "--hook",
                "blocks.1.hook_resid_pre",
                "-o",
                str(tmp_path / "v"),
            ]
        )
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--vector", "x", "--alphas", "a,b"])


def test_sweep_executor_flags_are_checked(capsys):
    with pytest.raises(SystemExit):
        cli.main(["sweep", "--vector", "x", "--alphas", "1", "--executor", "dask"])
    with pytest.raises(SystemExit, match="--resume needs --out"):
        cli.main(["sweep", "--vector", "x", "--alphas", "1", "--resume"])
    with pytest.raises(SystemExit, match="unknown --success"):
        cli.SuccessScorer("sentiment")
    s = cli.SuccessScorer("contains:owl,hawk")
    assert s(["an owl", "a cat"]).tolist() == [1, 0]
    assert pickle.loads(pickle.dumps(s))._fn is None  # travels without its classifier
