"""Hostile repositories served by the loopback Hub (and hostile local folders), for GRADIEND models, delta adapters
and PEFT exports: each is refused with a clear error; nothing is executed, unpickled or written outside the cache."""

import base64
import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

import gradiend_hf as gh
from gradiend_hf.adapters import DeltaAdapter
from gradiend_hf.adapters.peft_check import load_peft_export
from gradiend_hf.errors import AdapterLoadError, GradiendLoadError
from tiny_models import tiny_gender_feature, tiny_llama

DOWN = "model.layers.0.mlp.down_proj.weight"


class _Tripwire:
    """Unpickling this creates `path`: proof that something unpickled the file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (Path(self.path),)


@pytest.fixture(scope="module")
def artifacts(bpe, tmp_path_factory):
    """The files of a legitimate GRADIEND model, delta adapter and PEFT LoRA export: {kind: {name: bytes}}."""
    root = tmp_path_factory.mktemp("legit")
    base = tiny_llama(len(bpe))
    model = gh.GradiendModel.for_base_model(base, params=[DOWN], feature=tiny_gender_feature(), seed=0)
    model.save_pretrained(root / "gradiend")
    adapter = model.to_adapter(h=1.0, alpha=0.5, base_model=base)
    adapter.save_pretrained(root / "adapter")
    adapter.export_lora(root / "peft", base_model=base)
    return {kind: {p.name: p.read_bytes() for p in (root / kind).iterdir()}
            for kind in ("gradiend", "adapter", "peft")}


WEIGHTS = {"gradiend": "model.safetensors", "adapter": "adapter_model.safetensors",
           "peft": "adapter_model.safetensors"}
CONFIGS = {"gradiend": "config.json", "adapter": "adapter_config.json", "peft": "adapter_config.json"}
ERRORS = {"gradiend": GradiendLoadError, "adapter": AdapterLoadError, "peft": AdapterLoadError}


def _serve(hub, files):
    """A repository holding exactly `files` ({path: bytes}), committed on the server side: a hostile Hub can serve
    names and bytes the client would never upload."""
    store = hub.server.store
    repo_id = hub.new_repo_id("hostile")
    repo = store.create("model", repo_id, private=False)
    lines = [{"key": "header", "value": {"summary": "hostile"}}]
    lines += [{"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(),
                                        "encoding": "base64"}} for path, data in files.items()]
    store.commit(repo, "main", lines, create_pr=False)
    return repo_id


def _load(kind, source, base=None):
    if kind == "gradiend":
        return gh.GradiendModel.from_pretrained(source)
    if kind == "adapter":
        return DeltaAdapter.from_pretrained(source)
    return load_peft_export(base, source)


def _files_outside(root: Path, cache: Path) -> set[Path]:
    return {p for p in root.rglob("*") if cache not in p.parents and p != cache}


def _safetensors(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize("kind", ["gradiend", "adapter", "peft"])
def test_legitimate_repos_load_from_the_loopback_hub(hub, artifacts, bpe, kind):
    repo_id = _serve(hub, artifacts[kind])
    assert _load(kind, repo_id, tiny_llama(len(bpe))) is not None


@pytest.mark.parametrize("kind", ["gradiend", "adapter", "peft"])
@pytest.mark.parametrize("instead", [False, True], ids=["next-to", "instead-of"])
def test_pickles_next_to_or_instead_of_safetensors_are_refused_unread(hub, artifacts, bpe, tmp_path, kind, instead):
    tripwire = tmp_path / "unpickled"
    files = dict(artifacts[kind])
    if instead:
        del files[WEIGHTS[kind]]
    files["pytorch_model.bin" if kind == "gradiend" else "adapter_model.bin"] = pickle.dumps(_Tripwire(tripwire))
    repo_id = _serve(hub, files)
    with pytest.raises(ERRORS[kind], match=r"pickle file that can run code.*Nothing was downloaded or unpickled"):
        _load(kind, repo_id, tiny_llama(len(bpe)))
    assert not tripwire.exists()
    assert not list(hub.cache_dir.rglob("*.bin"))
    # the same folder on disk is refused too
    local = tmp_path / kind
    local.mkdir()
    for name, data in files.items():
        (local / name).write_bytes(data)
    with pytest.raises(ERRORS[kind], match="never pickled"):
        _load(kind, local, tiny_llama(len(bpe)))
    assert not tripwire.exists()


@pytest.mark.parametrize("kind", ["gradiend", "adapter", "peft"])
def test_a_config_with_auto_map_is_refused_and_no_code_runs(hub, artifacts, bpe, tmp_path, kind):
    tripwire = tmp_path / "executed"
    files = dict(artifacts[kind])
    config = json.loads(files[CONFIGS[kind]])
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    files[CONFIGS[kind]] = json.dumps(config).encode()
    files["evil.py"] = f"from pathlib import Path\nPath({str(tripwire)!r}).touch()\n".encode()
    repo_id = _serve(hub, files)
    with pytest.raises(ERRORS[kind], match=r"`auto_map`.*nothing was imported or executed"):
        _load(kind, repo_id, tiny_llama(len(bpe)))
    if kind == "gradiend":  # the Auto class a user calls first
        with pytest.raises(gh.GradiendError, match=r"`auto_map`.*nothing was imported or executed"):
            AutoModel.from_pretrained(repo_id)
    assert not tripwire.exists() and not list(hub.cache_dir.rglob("evil.py"))


@pytest.mark.parametrize("kind", ["gradiend", "adapter", "peft"])
@pytest.mark.parametrize("hostile", ["huge", "overlap"])
def test_hostile_safetensors_headers_are_refused_before_reading(hub, artifacts, bpe, kind, hostile):
    files = dict(artifacts[kind])
    if hostile == "huge":
        header = {"x": {"dtype": "F32", "shape": [2**40], "data_offsets": [0, 2**42]}}
        files[WEIGHTS[kind]] = _safetensors(header, b"\0" * 16)
        match = r"needs 4398046511104 bytes|describes \d+ bytes but the file has"
    else:
        header = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                  "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}
        files[WEIGHTS[kind]] = _safetensors(header, b"\0" * 24)
        match = "overlaps the tensor before it"
    repo_id = _serve(hub, files)
    with pytest.raises(ERRORS[kind], match=match):
        _load(kind, repo_id, tiny_llama(len(bpe)))


@pytest.mark.parametrize("kind", ["gradiend", "adapter", "peft"])
def test_file_names_leading_out_of_the_repo_are_refused_and_nothing_lands_outside_the_cache(hub, artifacts, bpe,
                                                                                             kind):
    files = dict(artifacts[kind])
    files["../../../escaped.safetensors"] = files[WEIGHTS[kind]]
    repo_id = _serve(hub, files)
    before = _files_outside(hub.home.parent, hub.cache_dir)
    with pytest.raises(ERRORS[kind], match="points outside the repository"):
        _load(kind, repo_id, tiny_llama(len(bpe)))
    assert _files_outside(hub.home.parent, hub.cache_dir) == before
    assert not list(hub.home.parent.rglob("escaped.safetensors"))


@pytest.mark.parametrize("kind", ["gradiend", "adapter", "peft"])
def test_symlinks_out_of_a_folder_are_refused(artifacts, bpe, tmp_path, kind):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / WEIGHTS[kind]).write_bytes(artifacts[kind][WEIGHTS[kind]])
    local = tmp_path / kind
    local.mkdir()
    for name, data in artifacts[kind].items():
        if name != WEIGHTS[kind]:
            (local / name).write_bytes(data)
    (local / WEIGHTS[kind]).symlink_to(outside / WEIGHTS[kind])
    with pytest.raises(ERRORS[kind], match="is a link to .*outside the"):
        _load(kind, local, tiny_llama(len(bpe)))


def test_records_that_place_a_parameter_in_another_module_are_refused(hub, artifacts):
    config = json.loads(artifacts["gradiend"]["config.json"])
    config["param_modules"][DOWN]["module"] = "lm_head"  # an export would write the update into the LM head
    repo_id = _serve(hub, {**artifacts["gradiend"], "config.json": json.dumps(config).encode()})
    with pytest.raises(GradiendLoadError, match=r"places parameter `model\.layers\.0\.mlp\.down_proj\.weight` in "
                                                r"`lm_head\.weight`"):
        gh.GradiendModel.from_pretrained(repo_id)

    adapter_config = json.loads(artifacts["adapter"]["adapter_config.json"])
    adapter_config["modules"]["model.norm.weight"] = {"module": "model.norm", "param": "weight", "type": "X",
                                                      "bias": False}
    repo_id = _serve(hub, {**artifacts["adapter"], "adapter_config.json": json.dumps(adapter_config).encode()})
    with pytest.raises(AdapterLoadError, match=r"records a module for `model\.norm\.weight`, which is not one of"):
        DeltaAdapter.from_pretrained(repo_id)


def test_peft_tensors_outside_the_selected_modules_are_refused(hub, artifacts, bpe):
    from safetensors.torch import load, save

    tensors = load(artifacts["peft"]["adapter_model.safetensors"])
    tensors["base_model.model.model.layers.1.self_attn.q_proj.weight"] = torch.zeros(32, 32)  # a base weight
    repo_id = _serve(hub, {**artifacts["peft"], "adapter_model.safetensors": save(tensors)})
    base = tiny_llama(len(bpe))
    before = base.model.layers[1].self_attn.q_proj.weight.detach().clone()
    with pytest.raises(AdapterLoadError, match=r"belongs to no target module and no `modules_to_save` module"):
        load_peft_export(base, repo_id)
    assert torch.equal(base.model.layers[1].self_attn.q_proj.weight, before)
    tensors = load(artifacts["peft"]["adapter_model.safetensors"])
    tensors["base_model.model.model.layers.7.mlp.down_proj.lora_A.weight"] = torch.zeros(32, 64)
    repo_id = _serve(hub, {**artifacts["peft"], "adapter_model.safetensors": save(tensors)})
    with pytest.raises(AdapterLoadError, match=r"module `model\.layers\.7\.mlp\.down_proj` that the base model"):
        load_peft_export(base, repo_id)


def test_a_gradiend_checkpoint_with_a_tensor_outside_its_config_is_refused(hub, artifacts):
    from safetensors.torch import load, save

    tensors = load(artifacts["gradiend"]["model.safetensors"])
    tensors["encoder.weight_7"] = torch.zeros(1, 32, 64)
    repo_id = _serve(hub, {**artifacts["gradiend"], "model.safetensors": save(tensors)})
    with pytest.raises(GradiendLoadError, match="holds tensor `encoder.weight_7`, which a GRADIEND model with this"):
        gh.GradiendModel.from_pretrained(repo_id)
