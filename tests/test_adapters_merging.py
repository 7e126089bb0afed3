"""Combining delta adapters: sum, TIES and DARE must be exactly PEFT's own merge functions."""

import pytest
import torch
from peft.utils import merge_utils

import gradiend_hf as gh
from gradiend_hf.adapters import DeltaAdapter
from gradiend_hf.errors import AdapterCompatibilityError

SHARED = "model.layers.0.mlp.down_proj.weight"
ONLY_A = "model.layers.1.mlp.up_proj.weight"
ONLY_B = "model.norm.weight"


@pytest.fixture
def two(llama):
    generator = torch.Generator().manual_seed(0)
    params = dict(llama.named_parameters())

    def random(name):
        return torch.randn(params[name].shape, generator=generator)

    a = DeltaAdapter.from_deltas({SHARED: random(SHARED), ONLY_A: random(ONLY_A)}, base_model=llama,
                                 feature={"name": "gender"})
    b = DeltaAdapter.from_deltas({SHARED: random(SHARED), ONLY_B: random(ONLY_B)}, base_model=llama,
                                 feature={"name": "race"})
    return a, b


def _peft(method, stack, weights, density=0.5):
    """PEFT's merge function for `method`, on one parameter's stacked updates (the caller seeds DARE)."""
    weights = torch.tensor(weights)
    if method == "sum":
        return merge_utils.task_arithmetic(stack, weights)
    if method == "ties":
        return merge_utils.ties(stack, weights, density, "total")
    if method == "dare_linear":
        return merge_utils.dare_linear(stack, weights, density)
    if method == "dare_ties":
        return merge_utils.dare_ties(stack, weights, density, "total")
    return merge_utils.magnitude_prune(stack, weights, density)


@pytest.mark.parametrize("method", ["sum", "ties", "dare_linear", "dare_ties", "magnitude_prune"])
def test_merges_equal_peft_merge_utils(two, method):
    a, b = two
    weights = [1.0, 0.5]
    merged = gh.merge_adapters([a, b], weights=weights, method=method, density=0.5, seed=3)
    assert set(merged.param_names) == {SHARED, ONLY_A, ONLY_B}
    # PEFT called parameter by parameter in the merged order, with zeros where an adapter has no update
    names = merged.param_names
    da, db = a.delta(), b.delta()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        expected = {}
        for name in names:
            shape = (da.get(name) if name in da else db[name]).shape
            stack = [da.get(name, torch.zeros(shape)), db.get(name, torch.zeros(shape))]
            expected[name] = _peft(method, stack, weights)
    for name in names:
        assert torch.equal(merged.delta()[name], expected[name]), name
    if method == "sum":
        assert torch.equal(merged.delta()[SHARED], da[SHARED] + 0.5 * db[SHARED])
        assert torch.equal(merged.delta()[ONLY_B], 0.5 * db[ONLY_B])
    sources = merged.config.merged_from[0]
    assert sources["method"] == method and [s["weight"] for s in sources["sources"]] == weights


def test_dare_is_reproducible_by_seed_and_differs_across_seeds(two):
    a, b = two
    first = gh.merge_adapters([a, b], method="dare", seed=1).delta()[SHARED]
    again = gh.merge_adapters([a, b], method="dare", seed=1).delta()[SHARED]
    other = gh.merge_adapters([a, b], method="dare", seed=2).delta()[SHARED]
    assert torch.equal(first, again) and not torch.equal(first, other)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        expected = _peft("dare_linear", [a.delta()[SHARED], b.delta()[SHARED]], [1.0, 1.0])
    assert torch.equal(first, expected)


def test_dial_adapters_merge_at_their_own_knobs(llama):
    gradiend = gh.GradiendModel.for_base_model(llama, params=["model.layers.0.mlp.*"], seed=0)
    dial = gradiend.to_adapter(h=0.5, alpha=0.1, dial=True)
    fixed = gradiend.to_adapter(h=0.5, alpha=0.1)
    merged = gh.merge_adapters([dial, fixed], weights=[1.0, -1.0])
    assert all(float(d.abs().max()) == 0.0 for d in merged.delta().values())


def test_bad_merges_are_refused(two, llama):
    a, b = two
    with pytest.raises(AdapterCompatibilityError, match="2 weights for 1 adapters"):
        gh.merge_adapters([a], weights=[1, 2])
    with pytest.raises(AdapterCompatibilityError, match="Unknown merge method 'svd'"):
        gh.merge_adapters([a, b], method="svd")
    with pytest.raises(AdapterCompatibilityError, match="density"):
        gh.merge_adapters([a, b], method="ties", density=0.0)
    with pytest.raises(AdapterCompatibilityError, match="at least one adapter"):
        gh.merge_adapters([])
    odd = DeltaAdapter.from_deltas({SHARED: torch.zeros(3, 3)})
    with pytest.raises(AdapterCompatibilityError, match="disagree on the shape"):
        gh.merge_adapters([a, odd])


def test_merged_adapter_applies_like_the_weighted_sum(two, llama):
    a, b = two
    merged = gh.merge_adapters([a, b], weights=[0.1, 0.2])
    before = llama.model.norm.weight.detach().clone()
    with merged.applied(llama):
        assert torch.equal(llama.model.norm.weight, before + 0.2 * b.delta()[ONLY_B])
    assert torch.equal(llama.model.norm.weight, before)


def test_fingerprints_are_compared_only_over_the_same_parameters(two, llama):
    import warnings

    from gradiend_hf.adapters.fingerprints import base_fingerprint

    a, b = two  # same base, different parameter sets: their fingerprints differ but the base is one
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        merged = gh.merge_adapters([a, b])
    assert merged.config.base_model_fingerprint is None  # it cannot be derived from the sources' own fingerprints

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        merged = gh.merge_adapters([a, b], base_model=llama)
        with merged.applied(llama):  # records the fingerprint of the union: no warning on its own base
            pass
    assert merged.config.base_model_fingerprint == base_fingerprint(llama, merged.param_names)

    other = DeltaAdapter.from_deltas(a.delta(), base_model=llama)
    other.config.base_model_fingerprint = "bf16-sha256:" + "0" * 32  # as if made on another revision
    with pytest.warns(UserWarning, match="different base weights"):
        gh.merge_adapters([a, other])
    with pytest.warns(UserWarning, match="made for other weights"):
        gh.merge_adapters([a, other], base_model=llama)
