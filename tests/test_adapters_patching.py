"""Exact in-place parameter edits: W0 + Σ scale·ΔW, restored bit for bit, tied weights edited once."""

import pytest
import torch

from gradiend_hf.adapters import ParameterPatch, applied_entries, apply_delta, original_tensors
from gradiend_hf.errors import AdapterCompatibilityError
from tiny_models import tiny_llama

NAMES = ["model.layers.0.mlp.down_proj.weight", "model.layers.1.self_attn.q_proj.weight", "model.norm.weight"]


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _assert_identical(model, snapshot):
    for name, param in model.named_parameters():
        assert torch.equal(param, snapshot[name]), name


def _deltas(model, seed=0, scale=1e-2):
    generator = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    return {n: scale * torch.randn(params[n].shape, generator=generator) for n in NAMES}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_write_is_w0_plus_scaled_sum_and_restore_is_exact_over_100_cycles(bpe, dtype):
    model = tiny_llama(len(bpe)).to(dtype)
    before = _snapshot(model)
    first, second = _deltas(model, 0), _deltas(model, 1)
    patch = ParameterPatch(model, NAMES)
    for cycle in range(100):
        scale = 0.5 + cycle / 100
        patch.write([(first, scale), (second, -1.0)])
        if cycle % 33 == 0:
            params = dict(model.named_parameters())
            for name in NAMES:
                expected = (before[name].float() + scale * first[name] + -1.0 * second[name]).to(dtype)
                assert torch.equal(params[name], expected), name
            assert not torch.equal(params[NAMES[0]], before[NAMES[0]])
        patch.restore()
        _assert_identical(model, before)


def test_context_manager_restores_after_an_exception(llama):
    before = _snapshot(llama)
    with pytest.raises(RuntimeError, match="boom"):
        with ParameterPatch(llama, NAMES) as patch:
            patch.write([(_deltas(llama), 1.0)])
            raise RuntimeError("boom")
    _assert_identical(llama, before)


def test_a_failure_half_way_through_a_write_puts_everything_back(llama, monkeypatch):
    before = _snapshot(llama)
    patch = ParameterPatch(llama, NAMES)
    last = dict(llama.named_parameters())[NAMES[-1]]
    calls = {"n": 0}
    real_copy = torch.Tensor.copy_

    def failing_copy(self, src, *args, **kwargs):
        if self is last and calls["n"] == 0:
            calls["n"] += 1
            raise RuntimeError("disk on fire")
        return real_copy(self, src, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "copy_", failing_copy)
    with pytest.raises(RuntimeError, match="disk on fire"):
        patch.write([(_deltas(llama), 1.0)])
    monkeypatch.undo()
    _assert_identical(llama, before)


def test_shape_mismatches_are_listed_together_before_anything_is_written(llama):
    before = _snapshot(llama)
    shapes = [[3, 3], [32, 32], [7]]
    with pytest.raises(AdapterCompatibilityError) as error:
        ParameterPatch(llama, [*NAMES, "model.layers.9.mlp.up_proj.weight"], [*shapes, [64, 32]])
    message = str(error.value)
    assert "1 parameter(s) missing and 2 with another shape" in message
    assert "model.layers.9.mlp.up_proj.weight" in message
    assert "expected [3, 3], found [32, 64]" in message and "expected [7], found [32]" in message
    _assert_identical(llama, before)


def test_tied_weights_are_one_tensor_edited_once(bpe):
    model = tiny_llama(len(bpe))
    model.config.tie_word_embeddings = True
    model.tie_weights()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    before = model.lm_head.weight.detach().clone()
    shape = list(before.shape)
    d_head, d_embed = torch.randn(shape) * 1e-2, torch.randn(shape) * 1e-2
    patch = ParameterPatch(model, ["lm_head.weight", "model.embed_tokens.weight"])
    patch.write([({"lm_head.weight": d_head, "model.embed_tokens.weight": d_embed}, 1.0)])
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    assert torch.equal(model.lm_head.weight, before + d_head + d_embed)  # both changes, each once
    patch.restore()
    assert torch.equal(model.model.embed_tokens.weight, before)


def test_stacked_deltas_come_off_in_any_order_exactly(llama):
    before = _snapshot(llama)
    a, b = _deltas(llama, 0), _deltas(llama, 1)
    handle_a = apply_delta(llama, a)
    handle_b = apply_delta(llama, {NAMES[0]: b[NAMES[0]]}, scale=2.0)
    assert [e.handle_id for e in applied_entries(llama)] == [handle_a.handle_id, handle_b.handle_id]
    originals = original_tensors(llama, NAMES)
    assert all(torch.equal(o, before[n]) for o, n in zip(originals, NAMES))
    handle_a.remove()  # the older one first: what stays is exactly W0 + 2·b
    params = dict(llama.named_parameters())
    assert torch.equal(params[NAMES[0]], before[NAMES[0]] + 2.0 * b[NAMES[0]])
    assert torch.equal(params[NAMES[1]], before[NAMES[1]])
    assert handle_a.active is False and handle_b.active is True
    handle_b.remove()
    handle_b.remove()  # twice is harmless
    _assert_identical(llama, before)
    assert applied_entries(llama) == []


# -- the registry never disagrees with the weights (issue 13) -------------------------------------------------------
import threading  # noqa: E402
import warnings  # noqa: E402

from gradiend_hf.adapters import DeltaAdapter, base_fingerprint, remove_deltas, resolve_changes  # noqa: E402
from gradiend_hf.adapters import fingerprints as fingerprints_module  # noqa: E402
from gradiend_hf.adapters import patching  # noqa: E402
from gradiend_hf.errors import AdapterStateError  # noqa: E402


def _fail_copies(monkeypatch, fail_on):
    """Make the weight writes numbered in `fail_on` (1-based, counted from now) raise."""
    calls = {"n": 0}
    real = patching._copy_into

    def copy_into(param, value):
        calls["n"] += 1
        if calls["n"] in fail_on or "all" in fail_on:
            raise RuntimeError(f"injected fault #{calls['n']}")
        real(param, value)

    monkeypatch.setattr(patching, "_copy_into", copy_into)
    return calls


def _expected(before, *terms):
    out = {n: t.float().clone() for n, t in before.items()}
    for deltas, scale in terms:
        for name, delta in deltas.items():
            out[name] = out[name] + scale * delta
    return {n: out[n].to(before[n].dtype) for n in before}


def test_a_failed_apply_leaves_the_weights_and_the_registry_as_they_were(llama, monkeypatch):
    before = _snapshot(llama)
    first, second = _deltas(llama, 0), _deltas(llama, 1)
    handle = apply_delta(llama, first)
    _fail_copies(monkeypatch, {2})  # the second weight of the new write fails
    with pytest.raises(RuntimeError, match="injected fault"):
        apply_delta(llama, second, scale=3.0)
    monkeypatch.undo()
    _assert_identical(llama, _expected(before, (first, 1.0)))
    assert [e.handle_id for e in applied_entries(llama)] == [handle.handle_id]
    handle.remove()
    _assert_identical(llama, before)


def test_a_failed_remove_keeps_both_adapters_on_and_recorded(llama, monkeypatch):
    before = _snapshot(llama)
    first, second = _deltas(llama, 0), _deltas(llama, 1)
    a, b = apply_delta(llama, first), apply_delta(llama, second, scale=-0.5)
    _fail_copies(monkeypatch, {1})
    with pytest.raises(RuntimeError, match="injected fault #1"):
        a.remove()
    monkeypatch.undo()
    assert a.active and b.active
    _assert_identical(llama, _expected(before, (first, 1.0), (second, -0.5)))
    a.remove(), b.remove()
    _assert_identical(llama, before)


def test_when_the_rollback_fails_too_the_registry_is_emptied_with_the_originals_in_place(llama, monkeypatch):
    before = _snapshot(llama)
    apply_delta(llama, _deltas(llama, 0))
    _fail_copies(monkeypatch, {1, 5})  # the new write fails, then the rewrite of what was on (restore succeeds)
    with pytest.raises(AdapterStateError, match="no delta adapter is applied now"):
        apply_delta(llama, _deltas(llama, 1))
    monkeypatch.undo()
    assert applied_entries(llama) == []
    _assert_identical(llama, before)


def test_when_nothing_can_be_written_the_model_is_marked_unknown(llama, monkeypatch):
    apply_delta(llama, _deltas(llama, 0))
    _fail_copies(monkeypatch, {"all"})
    with pytest.raises(AdapterStateError, match="Reload"):
        apply_delta(llama, _deltas(llama, 1))
    monkeypatch.undo()
    with pytest.raises(AdapterStateError, match="unknown"):
        applied_entries(llama)


def test_threads_toggling_adapters_on_one_model_never_bake_a_delta_in(bpe):
    model = tiny_llama(len(bpe))
    before = _snapshot(model)
    updates = [_deltas(model, seed, scale=1.0) for seed in range(4)]
    barrier = threading.Barrier(4)
    errors = []

    def worker(delta):
        try:
            barrier.wait()
            for _ in range(60):
                apply_delta(model, delta).remove()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(u,)) for u in updates]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert applied_entries(model) == []
    _assert_identical(model, before)


def test_an_in_place_change_while_on_is_reported_not_discarded(llama):
    before = _snapshot(llama)
    delta = _deltas(llama, 0)
    handle = apply_delta(llama, delta)
    params = dict(llama.named_parameters())
    optimizer = torch.optim.SGD([params[NAMES[0]]], lr=0.1)
    params[NAMES[0]].grad = torch.ones_like(params[NAMES[0]])
    optimizer.step()  # what a user's fine-tuning step does while the adapter is on
    stepped = params[NAMES[0]].detach().clone()
    with pytest.raises(AdapterStateError, match=r"model\.layers\.0\.mlp\.down_proj\.weight.*changed in place"):
        handle.remove()
    assert handle.active and torch.equal(params[NAMES[0]], stepped)  # nothing was done
    with pytest.raises(AdapterStateError):
        original_tensors(llama, NAMES)
    handle.remove(on_change="keep")  # the step survives, the adapter comes off
    torch.testing.assert_close(params[NAMES[0]], before[NAMES[0]] - 0.1, rtol=0, atol=1e-6)
    assert torch.equal(params[NAMES[1]], before[NAMES[1]])


def test_discarding_an_in_place_change_restores_the_originals_exactly(llama):
    before = _snapshot(llama)
    apply_delta(llama, _deltas(llama, 0))
    with torch.no_grad():
        dict(llama.named_parameters())[NAMES[2]].mul_(3.0)
    assert resolve_changes(llama, keep=False) == [NAMES[2]]
    remove_deltas(llama, lambda entry: True)
    _assert_identical(llama, before)


def test_non_finite_updates_are_refused_before_anything_is_written(bpe):
    model = tiny_llama(len(bpe))
    before = _snapshot(model)
    bad = _deltas(model, 0)
    bad[NAMES[1]][0, 0] = float("nan")
    with pytest.raises(AdapterCompatibilityError, match=r"1 NaN or infinite entry"):
        apply_delta(model, bad)
    with pytest.raises(AdapterCompatibilityError, match="finite"):
        apply_delta(model, _deltas(model, 0), scale=float("inf"))
    half = tiny_llama(len(bpe)).half()
    with pytest.raises(AdapterCompatibilityError, match="not finite in float16"):
        apply_delta(half, {NAMES[0]: torch.full((32, 64), 1e6)})
    assert applied_entries(model) == [] and applied_entries(half) == []
    _assert_identical(model, before)


def test_an_update_that_rounds_away_in_bf16_is_reported(bpe):
    model = tiny_llama(len(bpe)).to(torch.bfloat16)
    tiny = {NAMES[0]: 1e-6 * torch.randn(32, 64, generator=torch.Generator().manual_seed(0))}
    with pytest.warns(UserWarning, match=r"`model\.layers\.0\.mlp\.down_proj\.weight` mostly rounds away in "
                                         r"bfloat16: only \d+% of the entries"):
        handle = apply_delta(model, tiny)
    handle.remove()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_delta(model, {NAMES[0]: 0.5 * torch.randn(32, 64)}).remove()


def test_toggling_does_not_rehash_but_a_real_change_does(llama, monkeypatch):
    calls = {"n": 0}
    real = fingerprints_module.fingerprint

    def counting(tensors):
        calls["n"] += 1
        return real(tensors)

    monkeypatch.setattr(fingerprints_module, "fingerprint", counting)
    adapter = DeltaAdapter.from_deltas(_deltas(llama, 0), base_model=llama)  # records the fingerprint: 1 hash
    for _ in range(5):
        with adapter.applied(llama):  # each enable checks the fingerprint
            pass
    assert calls["n"] == 1
    first = base_fingerprint(llama, NAMES)
    with torch.no_grad():
        dict(llama.named_parameters())[NAMES[0]].add_(1.0)
    assert base_fingerprint(llama, NAMES) != first and calls["n"] == 2
