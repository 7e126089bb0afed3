"""`gradiend export | apply | merge | push` end to end on a tiny local model and a GRADIEND trained by the CLI."""

import copy
import json

import pytest
import torch
from huggingface_hub import HfApi
from peft import PeftModel
from transformers import AutoModelForCausalLM

from gradiend_hf import DeltaAdapter, GradiendModel
from gradiend_hf.cli import main
from tiny_models import tiny_gender_feature, tiny_llama


@pytest.fixture(scope="module")
def trained(tmp_path_factory, bpe):
    """A tiny Llama folder and a GRADIEND trained on it by the CLI (shared by the tests, which only read them)."""
    tmp_path = tmp_path_factory.mktemp("cli-adapters")
    folder = tmp_path / "tiny-llama"
    tiny_llama(len(bpe)).save_pretrained(folder)
    bpe.save_pretrained(folder)
    feature = tmp_path / "gender.jsonl"
    tiny_gender_feature().save_jsonl(feature)
    run = tmp_path / "run"
    code = main(["train", "--model", str(folder), "--feature", str(feature), "--out", str(run), "--params",
                 "model.layers.*.mlp.*", "--steps", "4", "--eval-steps", "2", "--batch-size", "4", "--lr", "1e-3",
                 "--test-examples", "0", "--quiet"])
    assert code == 0
    return run, folder


def test_export_writes_the_adapter_and_its_peft_exports(trained, tmp_path, capsys):
    run, base_folder = trained
    out = tmp_path / "debias"
    assert main(["export", str(run), "--h", "-1", "--alpha", "0.05", "--out", str(out), "--lora", "exact",
                 "--shira", "2"]) == 0
    printed = capsys.readouterr().out
    assert "lora export" in printed and "shira export" in printed
    adapter = DeltaAdapter.from_pretrained(out)
    gradiend = GradiendModel.from_pretrained(run)
    expected = {n: 0.05 * d for n, d in gradiend.decode(-1.0).items()}
    for name, delta in adapter.delta().items():
        torch.testing.assert_close(delta, expected[name], rtol=1e-6, atol=0)
    assert adapter.config.base_model_name_or_path == str(base_folder) and adapter.config.gradiend_model == str(run)
    base = AutoModelForCausalLM.from_pretrained(base_folder)
    merged = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "debias-lora")).merge_and_unload()
    adapter.merge(base)
    for (name, param), ours in zip(merged.named_parameters(), base.parameters()):
        assert torch.equal(param, ours), name
    assert json.loads((tmp_path / "debias-shira" / "adapter_config.json").read_text())["peft_type"] == "SHIRA"


def test_export_refuses_a_used_folder_and_bad_ranks_in_one_line(trained, tmp_path, capsys):
    run, _ = trained
    out = tmp_path / "used"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["export", str(run), "--h", "1", "--alpha", "0.1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err and "not written over it" in err
    assert (out / "notes.txt").read_text() == "mine"
    assert main(["export", str(run), "--h", "1", "--alpha", "0.1", "--out", str(tmp_path / "x"), "--lora",
                 "big"]) == 2
    assert "--lora must be 'exact'" in capsys.readouterr().err


def test_dial_export_then_apply_with_knobs_writes_a_plain_model(trained, tmp_path):
    run, base_folder = trained
    dial = tmp_path / "dial"
    assert main(["export", str(run), "--h", "0", "--alpha", "0.01", "--dial", "--out", str(dial)]) == 0
    merged_folder = tmp_path / "merged"
    assert main(["apply", str(dial), "--h", "0.5", "--alpha", "0.02", "--scale", "2", "--out",
                 str(merged_folder)]) == 0
    merged = AutoModelForCausalLM.from_pretrained(merged_folder)
    base = AutoModelForCausalLM.from_pretrained(base_folder)
    adapter = DeltaAdapter.from_pretrained(dial)
    adapter.merge(base, h=0.5, alpha=0.02, scale=2.0)
    for (name, param), ours in zip(merged.named_parameters(), base.parameters()):
        assert torch.equal(param, ours), name
    assert (merged_folder / "tokenizer.json").is_file()


def test_merge_combines_adapters_like_merge_adapters(trained, tmp_path):
    run, _ = trained
    for h in ("1", "-1"):
        assert main(["export", str(run), "--h", h, "--alpha", "0.1", "--out", str(tmp_path / f"h{h}")]) == 0
    out = tmp_path / "merged"
    assert main(["merge", str(tmp_path / "h1"), str(tmp_path / "h-1"), "--weights", "1", "0.5", "--out",
                 str(out)]) == 0
    merged = DeltaAdapter.from_pretrained(out)
    a, b = (DeltaAdapter.from_pretrained(tmp_path / f"h{h}") for h in ("1", "-1"))
    for name in merged.param_names:
        assert torch.equal(merged.delta()[name], a.delta()[name] + 0.5 * b.delta()[name])
    assert merged.config.merged_from[0]["method"] == "sum"


def test_push_uploads_adapters_and_peft_exports(hub, trained, tmp_path):
    run, _ = trained
    out = tmp_path / "debias"
    assert main(["export", str(run), "--h", "1", "--alpha", "0.1", "--out", str(out), "--lora", "4"]) == 0
    repo_id, lora_repo = hub.new_repo_id("adapter"), hub.new_repo_id("lora")
    assert main(["push", str(out), repo_id]) == 0
    assert main(["push", str(tmp_path / "debias-lora"), lora_repo]) == 0
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(HfApi().list_repo_files(repo_id))
    assert "export_report.json" in HfApi().list_repo_files(lora_repo)
    loaded = DeltaAdapter.from_pretrained(repo_id)
    assert all(torch.equal(loaded.tensors[k], v) for k, v in DeltaAdapter.from_pretrained(out).tensors.items())


def test_bench_compares_the_base_with_each_adapter(trained, tmp_path, capsys):
    run, base_folder = trained
    adapter = tmp_path / "debias"
    assert main(["export", str(run), "--h", "1", "--alpha", "0.5", "--out", str(adapter)]) == 0
    out = tmp_path / "bench"
    assert main(["bench", "--model", str(base_folder), "--adapter", str(adapter), "--suite", "stereoset,lm_score",
                 "--bias-types", "gender", "--limit", "4", "--bootstrap", "50", "--out", str(out), "--quiet"]) == 0
    assert {p.name for p in out.iterdir()} == {"base.json", "debias.json", "benchmarks.md", "benchmarks.png",
                                               "base.examples.safetensors", "debias.examples.safetensors",
                                               "debias.paired.json"}
    table = (out / "benchmarks.md").read_text()
    assert "| stereoset | gender | StereoSet SS (→ 50) |" in table and "Δ debias − base" in table
    assert "debias − base, paired" in table and "| stereoset | gender | ss |" in table
    paired = json.loads((out / "debias.paired.json").read_text())
    assert {(d["suite"], d["metric"]) for d in paired} >= {("stereoset", "ss"), ("lm_score", "perplexity")}
    base = json.loads((out / "base.json").read_text())
    debiased = json.loads((out / "debias.json").read_text())
    assert base["results"]["lm_score"] != debiased["results"]["lm_score"]  # the adapter was on for the second run
    assert main(["bench", "--model", str(base_folder), "--suite", "nonsense", "--out", str(tmp_path / "b2")]) == 2
    assert "Unknown or no suites" in capsys.readouterr().err
