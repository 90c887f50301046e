"""Nothing a caller passes is silently ignored: an option that a path does not use raises,
naming it (and, where there is one, what the path does take)."""

import math

import pytest

from interp_steer import build_vector, generate, sae
from interp_steer.cli import parser
from interp_steer.eval.sweep import bisect_increasing, calibrate
from interp_steer.testing import SENTIMENT_PAIRS, tiny_model

HOOK = "blocks.1.hook_resid_pre"
ONE_SHOT = {"prompt": "Tell me a story.", "promote": "Once upon a time"}


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def vec(model):
    return build_vector(model, SENTIMENT_PAIRS, HOOK, progress=False)


@pytest.mark.parametrize(
    "method, data, kw, named",
    [
        ("one_shot", ONE_SHOT, {"batch_size": 4}, "batch_size"),
        ("one_shot", ONE_SHOT, {"aggregation": "mean"}, "aggregation"),
        ("sae_feature", SENTIMENT_PAIRS, {"seed": 3}, "seed"),
        ("sae_feature", SENTIMENT_PAIRS, {"aggregation": "mean"}, "aggregation"),
    ],
)
def test_build_vector_refuses_shared_arguments_the_method_ignores(model, method, data, kw, named):
    with pytest.raises(ValueError, match=rf"{method}.*does not use \['{named}'\]"):
        build_vector(model, data, HOOK, method=method, progress=False, **kw)


def test_build_vector_still_takes_what_each_method_uses(model):
    a = build_vector(model, SENTIMENT_PAIRS, HOOK, method="probe", seed=1, batch_size=4)
    b = build_vector(model, SENTIMENT_PAIRS, HOOK, method="probe", seed=1, batch_size=8)
    assert a.directions.shape == b.directions.shape
    v = build_vector(model, ONE_SHOT, HOOK, method="one_shot", seed=2, steps=2, progress=False)
    assert v.metadata["seed"] == 2


@pytest.mark.parametrize(
    "kw, named", [({"positions": "prompt"}, "positions"), ({"force": True}, "force")]
)
def test_generate_without_a_vector_refuses_steering_arguments(model, kw, named):
    with pytest.raises(ValueError, match=rf"{named} given without a vector"):
        generate(model, ["hello"], max_new_tokens=2, **kw)


def test_calibrate_to_kl_refuses_sweep_arguments(model, vec):
    with pytest.raises(ValueError, match=r"uses no \['samples_per_prompt'\]"):
        calibrate(model, vec, ["hello"], target_kl=0.1, samples_per_prompt=2)
    with pytest.raises(ValueError, match=r"uses no \['alphas'\]"):
        calibrate(model, vec, ["hello"], target_kl=0.1, alphas=[1.0, 2.0])


def test_bisection_finds_the_crossing_and_refuses_to_invent_one():
    calls = []

    def f(x):
        calls.append(x)
        return x**2

    x = bisect_increasing(f, 2.0, max_x=64, tol=1e-4)
    assert x == pytest.approx(math.sqrt(2), rel=1e-4)
    # f(0) already above the target: the old loop halved towards 0 a thousand times and
    # returned 0.0, a value that looks like a result
    with pytest.raises(ValueError, match="already >= the target"):
        bisect_increasing(lambda x: 5.0, 2.0, max_x=64)
    with pytest.raises(ValueError, match="no interior crossing"):
        bisect_increasing(lambda x: 0.0 if x == 0 else 5.0, 2.0, max_x=64)
    with pytest.raises(ValueError, match="stays below"):
        bisect_increasing(lambda x: 0.0, 2.0, max_x=64)


@pytest.mark.parametrize(
    "kw, named",
    [({"architecture": "standard", "k": 32}, "k"), ({"l1_coefficient": 1.0}, "l1_coefficient")],
)
def test_sae_config_refuses_the_other_architectures_parameter(kw, named):
    with pytest.raises(ValueError, match=rf"{named} is not a parameter"):
        sae.SAETrainConfig(**kw)
    assert sae.SAETrainConfig(architecture="standard", l1_coefficient=2.0).l1_coefficient == 2.0


def test_cli_generate_accepts_every_position_mode():
    from interp_steer.interventions import POSITION_NAMES

    for verb in ("generate", "audit"):
        sub = parser()._subparsers._group_actions[0].choices[verb]
        (action,) = [a for a in sub._actions if "--positions" in a.option_strings]
        assert tuple(action.choices) == POSITION_NAMES, verb
    args = parser().parse_args(["generate", "--prompt", "hi", "--positions", "last_and_generated"])
    assert args.positions == "last_and_generated"


def test_cli_build_passes_no_seed_unless_given():
    assert parser().parse_args(["build", "--hook", HOOK, "-o", "v.safetensors"]).seed is None
    assert parser().parse_args(["generate", "--prompt", "hi"]).seed == 0
