"""Delta adapters and their PEFT exports through a Hub: the real huggingface_hub client and loopback Hub server."""

import copy
import os
import subprocess
import sys
import textwrap

import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from peft import PeftModel

import gradiend_hf as gh
from gradiend_hf.hub import CARD_MARKER
from tiny_models import tiny_gender_feature

RESULTS = {
    "eval_results": [{"task_type": "text-generation", "dataset_type": "stereoset", "dataset_name": "StereoSet dev",
                      "metric_type": "ss", "metric_name": "SS gender", "metric_value": 52.5}],
    "markdown": "| metric | base | debiased |\n|---|---|---|\n| SS gender | 60.1 | 52.5 |",
}


def _adapter(llama, **knobs):
    gradiend = gh.GradiendModel.for_base_model(llama, params=["model.layers.*.mlp.down_proj.weight"],
                                               feature=tiny_gender_feature(), seed=0,
                                               base_model_name_or_path="gemma-3-270m")
    return gradiend.to_adapter(h=1.0, alpha=0.1, **knobs)


def _same(a, b):
    return set(a.tensors) == set(b.tensors) and all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)


def test_push_and_load_back_with_our_card(hub, llama):
    adapter = _adapter(llama, dial=True)
    adapter.config.results = RESULTS
    repo_id = hub.new_repo_id("debias")
    adapter.push_to_hub(repo_id)
    assert set(HfApi().list_repo_files(repo_id)) >= {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    loaded = gh.DeltaAdapter.from_pretrained(repo_id)
    assert _same(adapter, loaded) and loaded.config == adapter.config and loaded.name_or_path == repo_id
    card = ModelCard.load(hf_hub_download(repo_id, "README.md"))
    data = card.data.to_dict()
    assert data["base_model"] == "google/gemma-3-270m" and data["license"] == "gemma"
    assert {"gradiend", "delta-adapter", "feature:gender"} <= set(data["tags"])
    metrics = data["model-index"][0]["results"][0]["metrics"]
    assert metrics[0]["value"] == 52.5 and metrics[0]["type"] == "ss"
    assert CARD_MARKER in card.text and "a **dial**" in card.text and "| SS gender | 60.1 | 52.5 |" in card.text
    assert f'DeltaAdapter.from_pretrained("{repo_id}")' in card.text


def test_push_keeps_a_readme_the_user_wrote(hub, llama):
    repo_id = hub.new_repo_id("debias")
    api = HfApi()
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"# Mine\n", path_in_repo="README.md", repo_id=repo_id)
    _adapter(llama).push_to_hub(repo_id)
    assert open(hf_hub_download(repo_id, "README.md")).read() == "# Mine\n"


def test_offline_load_from_the_cache_makes_no_request(hub, llama, tmp_path):
    adapter = _adapter(llama)
    repo_id = hub.new_repo_id("debias")
    adapter.push_to_hub(repo_id)
    gh.DeltaAdapter.from_pretrained(repo_id)  # fills the cache
    adapter.save_pretrained(tmp_path / "expected")
    before = len(hub.server.requests)
    script = textwrap.dedent(f"""
        import torch
        import gradiend_hf as gh
        loaded = gh.DeltaAdapter.from_pretrained({repo_id!r})
        expected = gh.DeltaAdapter.from_pretrained({str(tmp_path / "expected")!r})
        assert all(torch.equal(loaded.tensors[k], v) for k, v in expected.tensors.items())
        print("offline ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], env={**os.environ, **hub.env(offline=True)},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "offline ok" in run.stdout and len(hub.server.requests) == before


def test_lora_export_loads_in_peft_from_a_repo_id(hub, llama, tmp_path):
    adapter = _adapter(llama)
    adapter.export_lora(tmp_path / "lora", rank="exact", base_model=llama)
    repo_id = hub.new_repo_id("debias-lora")
    api = HfApi()
    api.create_repo(repo_id)
    api.upload_folder(folder_path=str(tmp_path / "lora"), repo_id=repo_id)
    merged = PeftModel.from_pretrained(copy.deepcopy(llama), repo_id).merge_and_unload()
    expected = copy.deepcopy(llama)
    adapter.merge(expected)
    for (name, param), other in zip(merged.named_parameters(), expected.parameters()):
        assert torch.equal(param, other), name
