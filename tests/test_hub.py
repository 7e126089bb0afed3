"""Pushing to and loading from a Hub: the real huggingface_hub client against the loopback Hub server."""

import subprocess
import sys
import textwrap

import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from transformers import AutoModel

from gradiend_hf import GradiendModel
from gradiend_hf.hub import CARD_MARKER, render_gradiend_card

FEATURE = {"name": "gender", "classes": ["female", "male"], "targets": {"female": ["she"], "male": ["he"]}}


def _model(llama):
    model = GradiendModel.for_base_model(llama, params=["model.layers.*.mlp.down_proj.weight"], feature=FEATURE,
                                         base_model_name_or_path="gemma-3-270m")
    model.config.training = {"best_step": 50, "validation_pearson_r": 0.99}
    return model


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_push_then_auto_model_loads_it_back(hub, llama):
    model = _model(llama)
    repo_id = hub.new_repo_id("gradiend")
    model.push_to_hub(repo_id, max_shard_size="10KB")
    files = set(HfApi().list_repo_files(repo_id))
    assert {"config.json", "README.md", "model.safetensors.index.json"} <= files
    assert sum(f.endswith(".safetensors") for f in files) > 1  # sharded upload
    loaded = AutoModel.from_pretrained(repo_id)
    assert type(loaded) is GradiendModel and _same(model, loaded)
    assert loaded.name_or_path == repo_id


def test_pushed_card_is_ours_with_metadata(hub, llama):
    model = _model(llama)
    repo_id = hub.new_repo_id("gradiend")
    model.push_to_hub(repo_id, tags=["debiasing"])
    card = ModelCard.load(hf_hub_download(repo_id, "README.md"))
    data = card.data.to_dict()
    assert data["base_model"] == "google/gemma-3-270m"  # the embedded model maps to its upstream repo
    assert data["library_name"] == "gradiend-hf" and data["license"] == "gemma"
    assert {"gradiend", "feature:gender", "debiasing"} <= set(data["tags"])
    assert CARD_MARKER in card.text
    assert "`female` → +1" in card.text and "model.layers.1.mlp.down_proj.weight" in card.text
    assert f'AutoModel.from_pretrained("{repo_id}")' in card.text
    assert "validation_pearson_r | 0.99" in card.text
    assert "Gemma Terms of Use" in card.text


def test_push_keeps_a_readme_the_user_wrote(hub, llama):
    model = _model(llama)
    repo_id = hub.new_repo_id("gradiend")
    api = HfApi()
    api.create_repo(repo_id)
    api.upload_file(path_or_fileobj=b"# My hand-written card\n", path_in_repo="README.md", repo_id=repo_id)
    model.push_to_hub(repo_id)
    assert open(hf_hub_download(repo_id, "README.md")).read() == "# My hand-written card\n"
    assert _same(model, AutoModel.from_pretrained(repo_id))


def test_push_refreshes_our_own_card(hub, llama):
    model = _model(llama)
    repo_id = hub.new_repo_id("gradiend")
    model.push_to_hub(repo_id)
    model.config.training = {"best_step": 75}
    model.push_to_hub(repo_id)
    text = open(hf_hub_download(repo_id, "README.md")).read()
    assert "best_step | 75" in text


def test_offline_load_from_the_cache(hub, llama, tmp_path):
    model = _model(llama)
    repo_id = hub.new_repo_id("gradiend")
    model.push_to_hub(repo_id)
    AutoModel.from_pretrained(repo_id)  # fills the cache
    expected = tmp_path / "expected.pt.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(expected))
    before = len(hub.server.requests)
    script = textwrap.dedent(f"""
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel
        import gradiend_hf
        model = AutoModel.from_pretrained({repo_id!r})
        expected = load_file({str(expected)!r})
        assert type(model).__name__ == "GradiendModel"
        assert all(torch.equal(expected[k], v) for k, v in model.state_dict().items())
        print("offline ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], env={**__import__("os").environ, **hub.env(offline=True)},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "offline ok" in run.stdout
    assert len(hub.server.requests) == before  # nothing went over the network


def test_card_without_embedded_base_has_no_base_model_metadata(llama):
    model = GradiendModel.for_base_model(llama, params=["model.layers.0.*"], feature=FEATURE,
                                         base_model_name_or_path="/some/local/folder")
    card = render_gradiend_card(model.config)
    assert "base_model" not in card.data.to_dict()
    assert "`/some/local/folder`" in card.text


def test_measured_results_become_model_index_and_a_results_section(llama):
    model = _model(llama)
    model.config.results = {
        "eval_results": [{"task_type": "feature-extraction", "dataset_type": "gradiend-gender",
                          "dataset_name": "held-out names in held-out templates", "metric_type": "pearsonr",
                          "metric_name": "encoder Pearson r", "metric_value": 0.998}],
        "markdown": "| group | mean h |\n|---|---|\n| female | 0.97 |",
    }
    card = render_gradiend_card(model.config, repo_id="me/gradiend")
    index = card.data.to_dict()["model-index"][0]
    assert index["name"] == "me/gradiend" and index["results"][0]["metrics"][0]["value"] == 0.998
    assert "## Results" in card.text and "| female | 0.97 |" in card.text
