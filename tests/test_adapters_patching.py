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
