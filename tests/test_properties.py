"""Property tests: malformed arguments to the public entry points fail clearly, by name.

Each example breaks exactly one argument of an otherwise valid call (a wrong type, an empty
input, NaN or inf, a negative or out-of-range number). The call must raise a ValueError or
TypeError whose message names that argument: never an AttributeError, IndexError, KeyError or
RuntimeError from deep inside.
"""

import math

import pytest
import scipy.stats
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interp_steer import SteeringVector, build_vector, generate, steer
from interp_steer.activations import get_activations
from interp_steer.eval import stats
from interp_steer.testing import tiny_model
from interp_steer.units import typical_norm

HOOK = "blocks.1.hook_resid_pre"
PAIRS = [("good happy", "bad sad"), ("great joy", "awful pain")]
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

MODEL = tiny_model("llama")
VEC = build_vector(MODEL, PAIRS, HOOK, progress=False)

nonfinite = st.sampled_from([math.nan, math.inf, -math.inf])
junk = st.one_of(
    st.none(),
    st.text(max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    st.just(object()),
)
bad_int_ge1 = st.one_of(
    st.integers(max_value=0),
    st.floats(0.5, 3.5).filter(lambda x: x != int(x)),
    st.text(max_size=2),
    st.none(),
    st.booleans(),
)


def _raises_named(fn, *names):
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    msg = str(info.value)
    assert any(n in msg for n in names), f"{type(info.value).__name__} does not name {names}: {msg}"


GENERATE_BAD = {
    "prompts": st.one_of(
        st.just([]), st.integers(), st.lists(st.integers(), min_size=1, max_size=2), st.none()
    ),
    "alphas": st.one_of(
        st.text(min_size=1, max_size=3),
        nonfinite,
        st.lists(st.floats(-2, 2), min_size=3, max_size=4),
    ),
    "positions": st.one_of(
        st.text(min_size=1, max_size=4).filter(lambda s: s not in ("all", "prompt", "generated")),
        st.just([]),
        st.integers(),
        st.lists(st.floats(0.5, 2.5), min_size=1, max_size=2),
    ),
    "max_new_tokens": st.one_of(bad_int_ge1, st.integers(10_000, 10**6)),
    "temperature": st.one_of(st.floats(max_value=-1e-3), nonfinite, st.text(max_size=2)),
    "top_p": st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.001), st.just(math.nan)),
    "seed": st.one_of(st.text(min_size=1, max_size=2), st.floats(0.5, 2.5), st.none()),
    "batch_size": st.one_of(
        st.integers(max_value=0), st.floats(0.5, 2.5), st.text(min_size=1, max_size=2)
    ),
}
NAMES = {"max_new_tokens": ("max_new_tokens",), "alphas": ("alpha",), "prompts": ("prompt",)}


@SETTINGS
@given(data=st.data())
def test_generate_names_its_bad_argument(data):
    arg = data.draw(st.sampled_from(sorted(GENERATE_BAD)))
    kw = dict(prompts=["hi", "yo"], vector=VEC, alphas=[0.0, 1.0], max_new_tokens=2)
    kw[arg] = data.draw(GENERATE_BAD[arg])
    _raises_named(lambda: generate(MODEL, **kw), *NAMES.get(arg, (arg,)))


BUILD_BAD = {
    "data": st.one_of(
        st.just([]),
        st.integers(),
        st.just([("only one",)]),
        st.just([("a", "")]),
        st.just({"prompt": "x"}),
        st.none(),
    ),
    "hook": st.one_of(st.just("blocks.99.hook_resid_pre"), st.just("not_a_hook"), st.integers()),
    "method": st.text(min_size=1, max_size=6).filter(
        lambda m: m not in ("pca", "probe", "mean_diff", "one_shot", "sae_feature")
    ),
    "aggregation": st.one_of(
        st.just("median"), st.just([]), st.just([500]), st.just([-500]), st.integers()
    ),
    "batch_size": st.one_of(st.integers(max_value=0), st.text(min_size=1, max_size=2)),
    "option": st.sampled_from(["centre", "kk", "steps", "lr"]),
}


@SETTINGS
@given(data=st.data())
def test_build_vector_names_its_bad_argument(data):
    arg = data.draw(st.sampled_from(sorted(BUILD_BAD)))
    kw = dict(data=PAIRS, hook=HOOK, method="mean_diff", progress=False)
    value = data.draw(BUILD_BAD[arg])
    if arg == "option":
        kw[value] = 1
        names = (value,)
    else:
        kw[arg] = value
        names = {
            "data": ("data", "pairs", "dataset"),
            "aggregation": ("aggregation", "position"),
            "hook": ("hook",),
        }.get(arg, (arg,))
    _raises_named(lambda: build_vector(MODEL, **kw), *names)


@SETTINGS
@given(
    alpha=st.one_of(
        nonfinite,
        st.text(min_size=1, max_size=2),
        st.lists(st.floats(-1, 1), min_size=3, max_size=3),
    ),
    ok=st.booleans(),
)
def test_steer_names_bad_alpha(alpha, ok):
    tokens = MODEL.to_tokens(["ab", "cd"])

    def run():
        with steer(MODEL, VEC, alpha):
            MODEL(tokens)

    _raises_named(run, "alpha")


@SETTINGS
@given(
    directions=st.one_of(
        st.just(torch.zeros(0, 8)),
        st.just(torch.zeros(2, 3, 4)),
        st.just(torch.tensor([1.0, math.nan])),
        st.just(torch.tensor([1, 2])),
        st.just(torch.tensor([math.inf, 0.0])),
    )
)
def test_vector_names_bad_directions(directions):
    _raises_named(lambda: SteeringVector(directions, HOOK), "directions", "NaN")


@SETTINGS
@given(
    content=st.one_of(
        st.just(b""),
        st.binary(min_size=1, max_size=64),
        st.just(b"\x08\x00\x00\x00\x00\x00\x00\x00{}"),
    )
)
def test_vector_load_names_a_corrupt_file(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("v") / "broken.safetensors"
    path.write_bytes(content)
    _raises_named(lambda: SteeringVector.load(path), "broken.safetensors")


def test_vector_load_names_a_truncated_file(tmp_path):
    path = VEC.save(tmp_path / "v.safetensors")
    path.write_bytes(path.read_bytes()[:-7])
    _raises_named(lambda: SteeringVector.load(path), "v.safetensors")


@SETTINGS
@given(data=st.data())
def test_capture_names_its_bad_argument(data):
    arg = data.draw(st.sampled_from(["texts", "hooks", "batch_size"]))
    kw = dict(texts=["hi there"], hooks=HOOK, batch_size=4, progress=False)
    kw[arg] = data.draw(
        {
            "texts": st.one_of(
                st.just([]), st.integers(), st.lists(st.integers(), min_size=1, max_size=2)
            ),
            "hooks": st.one_of(st.just("blocks.7.hook_resid_pre"), st.integers()),
            "batch_size": st.one_of(st.integers(max_value=0), st.text(min_size=1, max_size=2)),
        }[arg]
    )
    names = {"texts": ("text",), "hooks": ("hook",)}.get(arg, (arg,))
    _raises_named(lambda: get_activations(MODEL, **kw), *names)
    if arg == "texts" or arg == "hooks":
        hook = kw["hooks"] if arg == "hooks" else HOOK
        prompts = kw["texts"] if arg == "texts" else ["hi"]
        _raises_named(lambda: typical_norm(MODEL, hook, prompts), *names, "prompt")


@SETTINGS
@given(
    k=st.integers(-5, 20),
    n=st.integers(-3, 10),
    conf=st.one_of(st.floats(-1, 2), st.just(math.nan)),
)
def test_wilson_rejects_or_returns_an_interval(k, n, conf):
    if 0 <= k <= n and n > 0 and 0 < conf < 1:
        lo, hi = stats.wilson(k, n, conf)
        # the Wilson score interval in closed form (not the Wald or Agresti-Coull interval)
        z = scipy.stats.norm.ppf(1 - (1 - conf) / 2)
        p, z2n = k / n, z * z / n
        centre = (p + z2n / 2) / (1 + z2n)
        half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
        assert lo == pytest.approx(centre - half, abs=1e-9)
        assert hi == pytest.approx(centre + half, abs=1e-9)
    else:
        _raises_named(lambda: stats.wilson(k, n, conf), "wilson", "conf")
