"""CDA and Dropout: further pre-training into a delta adapter; the base restored exactly, cached, resumable."""

import json

import pytest
import torch

import gradiend_hf as gh
from gradiend_hf.debiasers import PretrainingArguments, raised_dropout, train_cda, train_dropout
from gradiend_hf.debiasers.dropout import residual_writers
from gradiend_hf.debiasers.pretraining import CHECKPOINT_DIR, further_pretrain
from gradiend_hf.errors import TrainingError
from tiny_models import tiny_gemma3, tiny_gender_feature, tiny_llama

ARGS = {"steps": 4, "batch_size": 4, "learning_rate": 1e-3, "checkpoint_every": 2, "progress": False}


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _same(model, snapshot):
    return all(torch.equal(p, snapshot[n]) for n, p in model.named_parameters())


def test_cda_gives_a_delta_adapter_and_leaves_the_base_exact(llama, bpe, tmp_path):
    before = _snapshot(llama)
    feature = tiny_gender_feature()
    adapter = train_cda(llama, bpe, feature, tmp_path / "cda", PretrainingArguments(**ARGS))
    assert _same(llama, before) and llama.training is False
    assert isinstance(adapter, gh.DeltaAdapter) and adapter.norm() > 0
    assert all(name.startswith("model.layers.") for name in adapter.param_names)  # block parameters only
    assert "two-sided counterfactual swaps" in adapter.config.description
    record = json.loads((tmp_path / "cda" / "pretraining.json").read_text())
    assert len(record["losses"]) == 4 and record["settings"]["method"] == "cda"
    assert not (tmp_path / "cda" / CHECKPOINT_DIR).exists()
    again = train_cda(llama, bpe, feature, tmp_path / "cda", PretrainingArguments(**ARGS))  # cached: no training
    assert all(torch.equal(again.tensors[k], v) for k, v in adapter.tensors.items())


def test_an_interrupted_run_resumes_to_the_same_update(llama, bpe, tmp_path):
    texts = [f"She said he would come on day {i}." for i in range(20)]
    full = further_pretrain(llama, bpe, texts, tmp_path / "full", PretrainingArguments(**ARGS), method="cda",
                            description="t")

    class Stop(Exception):
        pass

    calls = {"n": 0}
    original_forward = llama.forward

    def failing_forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # during step 3, after the checkpoint of step 2
            raise Stop
        return original_forward(*args, **kwargs)

    before = _snapshot(llama)
    llama.forward = failing_forward
    with pytest.raises(Stop):
        further_pretrain(llama, bpe, texts, tmp_path / "cut", PretrainingArguments(**ARGS), method="cda",
                         description="t")
    del llama.forward
    assert _same(llama, before) and (tmp_path / "cut" / CHECKPOINT_DIR / "state.json").is_file()
    resumed = further_pretrain(llama, bpe, texts, tmp_path / "cut", PretrainingArguments(**ARGS), method="cda",
                               description="t")
    for name, delta in full.tensors.items():
        torch.testing.assert_close(resumed.tensors[name], delta, rtol=1e-5, atol=1e-7)


def test_dropout_is_raised_while_training_and_restored(llama, gpt2, bert, bpe, wordpiece, tmp_path):
    with raised_dropout(gpt2) as changed:
        assert gpt2.transformer.h[0].attn.attn_dropout.p == 0.15 and gpt2.transformer.h[0].mlp.dropout.p == 0.2
    assert changed["dropout_modules"] > 0 and gpt2.transformer.h[0].mlp.dropout.p == 0.1
    with raised_dropout(llama) as changed:  # no hidden dropout modules: hooks on attention and MLP outputs
        assert llama.model.layers[0].self_attn.attention_dropout == 0.15
    assert changed["sublayer_output_hooks"] == 4 and llama.model.layers[0].self_attn.attention_dropout == 0.0
    assert not any(m._forward_hooks for m in llama.modules())
    before = _snapshot(bert)
    adapter = train_dropout(bert, wordpiece, tiny_gender_feature(), tmp_path / "dropout", PretrainingArguments(**ARGS))
    assert _same(bert, before) and adapter.norm() > 0 and "dropout raised to 0.2" in adapter.config.description


def test_a_model_with_a_delta_applied_is_refused(llama, bpe, tmp_path):
    delta = gh.DeltaAdapter.from_deltas({"model.norm.weight": torch.ones(32)}, base_model=llama)
    with delta.applied(llama), pytest.raises(TrainingError, match="switch them off"):
        train_cda(llama, bpe, tiny_gender_feature(), tmp_path / "cda", PretrainingArguments(**ARGS))
    assert not (tmp_path / "cda").exists()


@pytest.mark.parametrize("name", ["llama", "gemma3"])
def test_hidden_dropout_drops_what_sublayers_add_never_the_residual_stream(name, bpe):
    """With hidden dropout 1, every sublayer's contribution is dropped: each block passes its input through
    unchanged (dropout on the residual stream itself would zero it instead)."""
    model = (tiny_llama if name == "llama" else tiny_gemma3)(len(bpe))
    ids = torch.tensor([[3, 17, 42, 9, 5]])
    with raised_dropout(model, hidden=1.0, attention=0.0) as changed:
        model.train()
        states = model.model(input_ids=ids, output_hidden_states=True).hidden_states
        model.eval()
    assert changed["sublayer_output_hooks"] == 4
    torch.testing.assert_close(states[1], states[0], rtol=0, atol=0)
    eval_states = model.model(input_ids=ids, output_hidden_states=True).hidden_states  # hooks gone
    assert not torch.equal(eval_states[1], eval_states[0])


def test_a_block_without_known_sublayers_is_refused_in_one_line():
    with pytest.raises(TrainingError, match="expected sublayers named one of"):
        residual_writers(torch.nn.Sequential(torch.nn.Linear(2, 2)))
