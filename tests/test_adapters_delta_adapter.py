"""DeltaAdapter: toggle, merge/unmerge, dial, tied weights, other bases and dtypes, files, PEFT refusal."""

import copy
import json
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from safetensors.torch import save_file

import gradiend_hf as gh
from gradiend_hf.adapters import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, DeltaAdapter, DeltaAdapterConfig
from gradiend_hf.errors import AdapterCompatibilityError, AdapterLoadError, GradiendConfigError, OutputExistsError
from tiny_models import tiny_gender_feature, tiny_llama

PARAMS = ["model.layers.*.mlp.*", "model.norm.weight"]


@pytest.fixture
def gradiend(llama):
    model = gh.GradiendModel.for_base_model(llama, params=PARAMS, feature=tiny_gender_feature(), seed=0,
                                            base_model_name_or_path="tiny-llama")
    with torch.no_grad():  # a decoder that moves the outputs visibly
        for weight in model.decoder.weights:
            weight.mul_(50)
    return model


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _assert_identical(model, snapshot):
    for name, param in model.named_parameters():
        assert torch.equal(param, snapshot[name]), name


def _reference(base, deltas, scale=1.0):
    """A deep copy of the base with W + scale·ΔW written by hand."""
    model = copy.deepcopy(base)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, delta in deltas.items():
            params[name].copy_((params[name].float() + scale * delta.float()).to(params[name].dtype))
    return model


def _ids(bpe):
    return bpe("Mary said that she would come", return_tensors="pt").input_ids


def test_to_adapter_is_alpha_times_decode(gradiend):
    adapter = gradiend.to_adapter(h=-0.7, alpha=0.05)
    decoded = gradiend.decode(-0.7)
    assert adapter.param_names == gradiend.config.param_names
    for name, delta in adapter.delta().items():
        torch.testing.assert_close(delta, 0.05 * decoded[name], rtol=1e-6, atol=0)
    assert adapter.config.feature["name"] == "gender" and adapter.config.h == [-0.7]
    assert adapter.config.base_model_fingerprint == gradiend.config.base_model_fingerprint
    assert adapter.config.modules["model.norm.weight"]["type"] == "LlamaRMSNorm"


@pytest.mark.parametrize("h,alpha", [(1.0, 0.1), (-0.4, 0.02), (10.0, -1e-3)])
def test_the_dial_at_h_equals_the_fixed_adapter_made_at_h(gradiend, llama, bpe, h, alpha):
    dial = gradiend.to_adapter(h=0.0, alpha=1.0, dial=True)
    fixed = gradiend.to_adapter(h=h, alpha=alpha)
    dialled = dial.delta(h=h, alpha=alpha)
    assert all(torch.equal(dialled[n], d) for n, d in fixed.delta().items())
    with dial.applied(llama, h=h, alpha=alpha):
        dial_logits = llama(_ids(bpe)).logits
    with fixed.applied(llama):
        fixed_logits = llama(_ids(bpe)).logits
    assert torch.equal(dial_logits, fixed_logits)
    with pytest.raises(AdapterCompatibilityError, match="knobs only of a dial adapter"):
        fixed.delta(h=1.0)


def test_outputs_while_on_equal_the_base_with_w_plus_scale_delta(gradiend, llama, bpe):
    adapter = gradiend.to_adapter(h=1.0, alpha=0.2)
    reference = _reference(llama, adapter.delta(), scale=0.5)
    base_logits = llama(_ids(bpe)).logits
    with adapter.applied(llama, scale=0.5) as model:
        assert model is llama and adapter.is_applied(llama)
        on = llama(_ids(bpe)).logits
    assert torch.equal(on, reference(_ids(bpe)).logits)
    assert not torch.allclose(on, base_logits, atol=1e-4)  # the update does something
    assert torch.equal(llama(_ids(bpe)).logits, base_logits) and not adapter.is_applied(llama)


def test_toggle_and_merge_are_exact_over_100_cycles(gradiend, llama):
    adapter = gradiend.to_adapter(h=1.0, alpha=0.3)
    before = _snapshot(llama)
    on = _reference(llama, adapter.delta())
    expected_on = dict(on.named_parameters())
    for cycle in range(100):
        handle = adapter.merge(llama) if cycle % 2 else adapter.enable(llama)
        if cycle % 25 == 0:
            for name in adapter.param_names:
                assert torch.equal(dict(llama.named_parameters())[name], expected_on[name])
        assert (adapter.unmerge(llama) if cycle % 2 else adapter.disable(llama)) == 1
        assert not handle.active
        _assert_identical(llama, before)


def test_an_exception_inside_applied_leaves_the_base_exact(gradiend, llama):
    adapter = gradiend.to_adapter(h=-1.0, alpha=0.3)
    before = _snapshot(llama)
    for _ in range(3):
        with pytest.raises(ValueError, match="inside"):
            with adapter.applied(llama):
                raise ValueError("raised inside the block")
        _assert_identical(llama, before)


def test_a_failing_apply_leaves_nothing_half_applied(gradiend, llama, bpe):
    adapter = gradiend.to_adapter(h=1.0, alpha=0.3)
    before = _snapshot(llama)
    wrong = tiny_llama(len(bpe))
    with torch.no_grad():
        wrong.model.norm.weight = torch.nn.Parameter(torch.ones(7))  # one parameter of another shape
    with pytest.raises(AdapterCompatibilityError):
        with adapter.applied(wrong):
            pass
    assert not adapter.is_applied(wrong)
    _assert_identical(llama, before)


def test_merge_and_enable_of_two_adapters_come_off_independently(gradiend, llama):
    gender = gradiend.to_adapter(h=1.0, alpha=0.1)
    other = DeltaAdapter.from_deltas({"model.norm.weight": torch.full((32,), 0.25)}, base_model=llama)
    before = _snapshot(llama)
    gender.merge(llama)
    other.enable(llama, scale=2.0)
    assert torch.equal(llama.model.norm.weight,
                       (before["model.norm.weight"] + gender.delta()["model.norm.weight"] + 2.0 * 0.25))
    gender.unmerge(llama)
    assert torch.equal(llama.model.norm.weight, before["model.norm.weight"] + 2.0 * 0.25)
    other.disable(llama)
    _assert_identical(llama, before)


def test_tied_weights_stay_tied_and_change_once(bpe):
    base = tiny_llama(len(bpe))
    base.config.tie_word_embeddings = True
    base.tie_weights()
    gradiend = gh.GradiendModel.for_base_model(base, params=["model.embed_tokens.weight"], seed=0)
    adapter = gradiend.to_adapter(h=1.0, alpha=0.5)
    delta = adapter.delta()["model.embed_tokens.weight"]
    before = base.lm_head.weight.detach().clone()
    with adapter.applied(base):
        assert base.model.embed_tokens.weight is base.lm_head.weight
        assert torch.equal(base.lm_head.weight, before + delta)  # the head sees the change, made once
    assert torch.equal(base.model.embed_tokens.weight, before)
    # the tied alias name (not listed by named_parameters) resolves to the same tensor
    alias = DeltaAdapter.from_deltas({"lm_head.weight": delta})
    with alias.applied(base):
        assert base.model.embed_tokens.weight is base.lm_head.weight
        assert torch.equal(base.model.embed_tokens.weight, before + delta)
    assert torch.equal(base.lm_head.weight, before)


def test_a_mismatched_base_gets_one_error_listing_every_mismatch(gradiend, bpe):
    from transformers import LlamaConfig, LlamaForCausalLM

    adapter = gradiend.to_adapter(h=1.0, alpha=0.1)
    config = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(bpe))
    other = LlamaForCausalLM(config)
    with pytest.raises(AdapterCompatibilityError) as error:
        adapter.enable(other)
    message = str(error.value)
    assert "3 parameter(s) missing and 3 with another shape" in message
    assert "missing: `model.layers.1.mlp.gate_proj.weight`" in message
    assert "shape of `model.layers.0.mlp.down_proj.weight`: expected [32, 64], found [32, 48]" in message
    assert "tiny-llama" in message


def test_other_weights_warn_but_apply_and_another_dtype_works(gradiend, llama, bpe):
    adapter = gradiend.to_adapter(h=1.0, alpha=0.1)
    sibling = tiny_llama(len(bpe), seed=1)  # same architecture, other weights (a fine-tuned sibling)
    with pytest.warns(UserWarning, match="made for other weights"):
        with adapter.applied(sibling):
            pass
    half = copy.deepcopy(llama).to(torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same weights in bf16: same fingerprint, no warning
        with adapter.applied(half):
            params = dict(half.named_parameters())
            name = adapter.param_names[0]
            expected = (dict(llama.named_parameters())[name].to(torch.bfloat16).float()
                        + adapter.delta()[name]).to(torch.bfloat16)
            assert params[name].dtype == torch.bfloat16 and torch.equal(params[name], expected)


def test_save_and_load_round_trip_exactly_with_the_expected_files(gradiend, tmp_path):
    for dial in (False, True):
        adapter = gradiend.to_adapter(h=0.6, alpha=0.01, dial=dial)
        folder = adapter.save_pretrained(tmp_path / f"dial-{dial}")
        assert {p.name for p in folder.iterdir()} == {ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, "README.md"}
        loaded = DeltaAdapter.from_pretrained(folder)
        assert loaded.config == adapter.config and loaded.is_dial == dial
        assert set(loaded.tensors) == set(adapter.tensors)
        assert all(torch.equal(loaded.tensors[k], v) for k, v in adapter.tensors.items())
        raw = json.loads((folder / ADAPTER_CONFIG_NAME).read_text())
        assert raw["adapter_type"] == "gradiend_delta" and raw["base_model_name_or_path"] == "tiny-llama"


def test_a_readme_the_user_wrote_is_kept(gradiend, tmp_path):
    (tmp_path / "README.md").write_text("# mine\n")
    gradiend.to_adapter(h=1.0, alpha=0.1).save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == "# mine\n"


def test_broken_folders_are_refused_with_the_file_named(gradiend, llama, tmp_path):
    folder = gradiend.to_adapter(h=1.0, alpha=0.1).save_pretrained(tmp_path / "a")
    weights = folder / ADAPTER_WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes(data[:-100])
    with pytest.raises(AdapterLoadError, match="truncated or corrupt"):
        DeltaAdapter.from_pretrained(folder)
    save_file({"model.norm.weight": torch.zeros(32)}, str(weights))
    with pytest.raises(AdapterLoadError, match="tensor\\(s\\) missing"):
        DeltaAdapter.from_pretrained(folder)
    weights.unlink()
    with pytest.raises(AdapterLoadError, match="no `adapter_model.safetensors`"):
        DeltaAdapter.from_pretrained(folder)
    config = json.loads((folder / ADAPTER_CONFIG_NAME).read_text())
    config["alpah"] = 1.0
    (folder / ADAPTER_CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(AdapterLoadError, match="Did you mean `alpha`"):
        DeltaAdapter.from_pretrained(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterLoadError, match="adapter_config.json` is missing"):
        DeltaAdapter.from_pretrained(tmp_path / "empty")
    with pytest.raises(AdapterLoadError, match="neither a local folder nor a reachable Hub repository"):
        DeltaAdapter.from_pretrained(tmp_path / "no-such-folder")
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(copy.deepcopy(llama), LoraConfig(r=2, target_modules=["q_proj"]))
    lora.save_pretrained(tmp_path / "lora")
    with pytest.raises(AdapterLoadError, match="PEFT `LORA` adapter: load it with `peft.PeftModel"):
        DeltaAdapter.from_pretrained(tmp_path / "lora")


def test_peft_and_transformers_refuse_our_folder_with_a_pointer(gradiend, llama, tmp_path):
    from peft import PeftConfig, PeftModel

    folder = gradiend.to_adapter(h=1.0, alpha=0.1).save_pretrained(tmp_path / "delta")
    for load in (lambda: PeftConfig.from_pretrained(str(folder)),
                 lambda: PeftModel.from_pretrained(copy.deepcopy(llama), str(folder)),
                 lambda: copy.deepcopy(llama).load_adapter(str(folder))):
        with pytest.raises(KeyError, match="gradiend_hf.DeltaAdapter.from_pretrained"):
            load()


def test_config_validation_errors():
    with pytest.raises(GradiendConfigError, match="2 entries but `param_shapes` has 1"):
        DeltaAdapterConfig(param_names=["a", "b"], param_shapes=[[1]])
    with pytest.raises(GradiendConfigError, match="must hold 1 finite"):
        DeltaAdapterConfig(param_names=["a"], param_shapes=[[1]], h=[1.0, 2.0])
    with pytest.raises(GradiendConfigError, match="dial adapter needs default values"):
        DeltaAdapterConfig(param_names=["a"], param_shapes=[[1]], dial=True)
    with pytest.raises(AdapterCompatibilityError, match="finite"):
        DeltaAdapter.from_deltas({"model.norm.weight": torch.zeros(32)}).enable(torch.nn.Linear(1, 1),
                                                                                scale=float("nan"))


def test_merge_and_save_writes_a_plain_model_that_loads_without_gradiend(gradiend, llama, bpe, tmp_path):
    adapter = gradiend.to_adapter(h=1.0, alpha=0.2)
    before = _snapshot(llama)
    folder = adapter.merge_and_save(llama, tmp_path / "merged", tokenizer=bpe, scale=0.5)
    _assert_identical(llama, before)  # the base in memory is unchanged
    with adapter.applied(llama, scale=0.5):
        expected = llama(_ids(bpe)).logits
    save_file({"logits": expected.detach().contiguous()}, str(tmp_path / "expected.safetensors"))
    script = textwrap.dedent(f"""
        import sys, torch
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained({str(folder)!r})
        tokenizer = AutoTokenizer.from_pretrained({str(folder)!r})
        ids = tokenizer("Mary said that she would come", return_tensors="pt").input_ids
        expected = load_file({str(tmp_path / "expected.safetensors")!r})["logits"]
        assert torch.equal(model(ids).logits, expected)
        assert "gradiend_hf" not in sys.modules
        print("plain ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "plain ok" in run.stdout
    with pytest.raises(OutputExistsError, match="not written over it"):
        adapter.merge_and_save(llama, folder)
