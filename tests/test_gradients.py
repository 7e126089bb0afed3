"""The gradient engine against a straightforward reference: the HF model's own loss with `labels` and backward."""

import pytest
import torch

from gradiend_hf import GradientEngine, ParameterSelectionError, TargetTokenizationError, select_parameters
from gradiend_hf.features import FeatureExample
from gradiend_hf.gradients import SlotTokenizer, drop_multi_token_examples, layer_index, parse_layers
from reference_gradients import plain_backward_gradients

EXAMPLES = [
    FeatureExample("Mary said that [MASK] would come home before he left.", "she", "he", "female"),
    FeatureExample("John explained the vision as best [MASK] could to everyone.", "he", "she", "male"),
    FeatureExample("Anna smiled because [MASK] knew the answer.", "she", "he", "female"),
]


def _assert_close_gradients(ours, reference):
    # ≤ 1e-5 relative over all selected entries; each tensor within a small absolute tolerance of that scale
    # (some tensors, e.g. attention key biases, have a gradient that is exactly zero in theory).
    flat_ours = torch.cat([ours[n].flatten() for n in reference])
    flat_ref = torch.cat([reference[n].flatten() for n in reference])
    assert float((flat_ours - flat_ref).norm() / flat_ref.norm()) <= 1e-5
    scale = float(flat_ref.abs().max())
    for name in reference:
        torch.testing.assert_close(ours[name], reference[name], rtol=1e-4, atol=1e-6 * scale)


@pytest.mark.parametrize("source", ["factual", "counterfactual", "diff"])
def test_gradients_equal_plain_backward(lm_and_tokenizer, source):
    kind, model, tokenizer = lm_and_tokenizer
    names = list(select_parameters(model))
    pair = GradientEngine(model, tokenizer, names).gradients(EXAMPLES, source=source)
    masked = kind == "bert"
    factual = plain_backward_gradients(model, tokenizer, EXAMPLES, "factual", names, masked=masked)
    counterfactual = plain_backward_gradients(model, tokenizer, EXAMPLES, "counterfactual", names, masked=masked)
    diff = {n: factual[n] - counterfactual[n] for n in names}
    expected_source = {"factual": factual, "counterfactual": counterfactual, "diff": diff}[source]
    _assert_close_gradients(pair.source, expected_source)
    _assert_close_gradients(pair.target, diff)


def test_source_is_not_aliased_with_the_target(llama, bpe):
    # The reference code subtracted in place, so its "source" silently became ∇±.
    names = list(select_parameters(llama))
    engine = GradientEngine(llama, bpe, names)
    pair = engine.gradients(EXAMPLES, source="factual")
    factual_only = engine.gradients(EXAMPLES, source="factual").source
    for name in names:
        assert pair.source[name].data_ptr() != pair.target[name].data_ptr()
        torch.testing.assert_close(pair.source[name], factual_only[name], rtol=0, atol=0)


def test_causal_lm_scores_the_next_token_after_the_prefix(llama, bpe):
    engine = GradientEngine(llama, bpe, list(select_parameters(llama)))
    batch = engine.tokenize(EXAMPLES)
    example = EXAMPLES[0]
    prefix_ids = bpe(example.prefix.rstrip())["input_ids"]
    assert batch.input_ids[0, : len(prefix_ids)].tolist() == prefix_ids
    assert int(batch.positions[0]) == len(prefix_ids) - 1  # the last prefix token predicts the slot
    assert bpe.convert_ids_to_tokens(int(batch.factual_ids[0])) == "Ġshe"  # leading-space convention
    with torch.no_grad():
        logits = llama(input_ids=torch.tensor([prefix_ids])).logits[0, -1].log_softmax(-1)
    pair = engine.gradients(EXAMPLES[:1])
    torch.testing.assert_close(pair.factual_logprob[0], logits[batch.factual_ids[0]])


def test_masked_lm_masks_only_the_slot(bert, wordpiece):
    engine = GradientEngine(bert, wordpiece, list(select_parameters(bert)))
    batch = engine.tokenize(EXAMPLES)
    for row, position in zip(batch.input_ids, batch.positions):
        assert (row == wordpiece.mask_token_id).sum() == 1 and row[position] == wordpiece.mask_token_id
    assert wordpiece.convert_ids_to_tokens(batch.factual_ids.tolist()) == ["she", "he", "she"]


def test_lm_head_runs_only_at_scored_positions(llama, bpe):
    seen = []
    head = llama.get_output_embeddings()
    handle = head.register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape)))
    try:
        GradientEngine(llama, bpe, list(select_parameters(llama))).gradients(EXAMPLES)
    finally:
        handle.remove()
    assert seen == [(3, 1, len(bpe))]  # one position per text, one forward pass for both targets


def test_only_selected_parameters_get_gradients_and_flags_are_restored(llama, bpe):
    names = ["model.layers.1.mlp.down_proj.weight"]
    llama.train()
    flags = {n: p.requires_grad for n, p in llama.named_parameters()}
    calls = []
    embed = llama.get_input_embeddings()
    handle = embed.weight.register_hook(lambda g: calls.append(1))
    try:
        pair = GradientEngine(llama, bpe, names).gradients(EXAMPLES)
    finally:
        handle.remove()
    assert list(pair.source) == names and not calls  # backward never reached the embeddings
    assert llama.training and flags == {n: p.requires_grad for n, p in llama.named_parameters()}
    assert all(p.grad is None for p in llama.parameters())


@pytest.mark.parametrize("source", ["factual", "diff"])
def test_directional_derivatives_equal_per_example_gradients(lm_and_tokenizer, source):
    _, model, tokenizer = lm_and_tokenizer
    names = list(select_parameters(model))
    engine = GradientEngine(model, tokenizer, names)
    torch.manual_seed(1)
    directions = [{n: torch.randn_like(p) for n, p in engine.params.items()} for _ in range(2)]
    fast = engine.directional_derivatives(EXAMPLES, directions, source=source)
    assert fast.shape == (3, 2)
    for i, example in enumerate(EXAMPLES):
        gradient = engine.gradients([example], source=source).source
        for k, direction in enumerate(directions):
            slow = sum((gradient[n] * direction[n]).sum() for n in names)
            torch.testing.assert_close(fast[i, k], slow, rtol=1e-4, atol=1e-6)


def test_multi_token_target_gets_a_clear_error(llama, bpe):
    engine = GradientEngine(llama, bpe, list(select_parameters(llama)))
    bad = FeatureExample("Mary said that [MASK] would come.", "xylophonist", "he", "female")
    with pytest.raises(TargetTokenizationError, match="'xylophonist'.*not exactly one token"):
        engine.gradients([bad])
    kept, dropped = drop_multi_token_examples([bad, *EXAMPLES], engine.slots)
    assert dropped == 1 and kept == EXAMPLES


def test_causal_slot_at_the_start_uses_bos(llama, bpe):
    slots = SlotTokenizer(bpe, "causal")
    batch = slots([FeatureExample("[MASK] said hello.", "The", "A", "female")])
    assert batch.input_ids[0, 0] == bpe.bos_token_id and int(batch.positions[0]) == 0


def test_long_inputs_are_cut_around_the_slot(bert, wordpiece, bpe):
    long_text = "the cat sat on the wall . " * 40
    example = FeatureExample(long_text + "Mary said that [MASK] knew. " + long_text, "she", "he", "female")
    masked = SlotTokenizer(wordpiece, "masked", max_length=32)(([example]))
    assert masked.input_ids.shape[1] == 32 and masked.input_ids[0, masked.positions[0]] == wordpiece.mask_token_id
    causal = SlotTokenizer(bpe, "causal", max_length=32)([example])
    assert causal.input_ids.shape[1] == 32
    assert causal.input_ids[0].tolist() == bpe(example.prefix.rstrip())["input_ids"][-32:]


def test_select_parameters_default_patterns_and_layers(llama, bert):
    default = select_parameters(llama)
    assert all(layer_index(n) is not None for n in default)
    assert "lm_head.weight" not in default and "model.embed_tokens.weight" not in default
    assert "model.embed_tokens.weight" in select_parameters(llama, include_embeddings=True)
    mlp = select_parameters(llama, ["model.layers.*.mlp.*"], layers=[1])
    assert list(mlp) == [f"model.layers.1.mlp.{m}_proj.weight" for m in ("gate", "up", "down")]
    assert all(".layer.0." in n for n in select_parameters(bert, layers=range(0, 1)))
    with pytest.raises(ParameterSelectionError, match="'model.layers.\\*.attn.\\*' matches no parameter"):
        select_parameters(llama, ["model.layers.*.attn.*"])
    with pytest.raises(ParameterSelectionError, match="No parameter"):
        select_parameters(llama, layers=[7])


def test_parse_layers():
    assert parse_layers("0-2,5") == [0, 1, 2, 5]
    assert parse_layers(None) is None
    with pytest.raises(ValueError, match="bad part 'x'"):
        parse_layers("1,x")


def test_engine_refuses_unknown_parameters(llama, bpe):
    with pytest.raises(ParameterSelectionError, match="has no parameter `bert.encoder"):
        GradientEngine(llama, bpe, ["bert.encoder.layer.0.output.dense.weight"])


def test_grad_scale_returns_the_unscaled_gradient(llama, bpe):
    engine = GradientEngine(llama, bpe, list(select_parameters(llama)))
    plain = engine.gradients(EXAMPLES)
    scaled = engine.gradients(EXAMPLES, grad_scale=1024.0)
    for name in plain.source:
        torch.testing.assert_close(scaled.source[name], plain.source[name], rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(scaled.target[name], plain.target[name], rtol=1e-5, atol=1e-9)
    with pytest.raises(FloatingPointError, match="overflowed"):
        engine.gradients(EXAMPLES, grad_scale=1e38)
