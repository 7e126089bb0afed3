"""The `gradiend` command line, end to end on tiny local models."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi

from gradiend_hf import GradiendModel
from gradiend_hf.cli import main
from tiny_models import tiny_gender_feature


@pytest.fixture
def tiny_folder(tmp_path, llama, bpe):
    folder = tmp_path / "tiny-llama"
    llama.save_pretrained(folder)
    bpe.save_pretrained(folder)
    return folder


@pytest.fixture
def feature_file(tmp_path):
    path = tmp_path / "gender.jsonl"
    tiny_gender_feature().save_jsonl(path)
    return path


def _train(tiny_folder, feature_file, out, *extra):
    return main(["train", "--model", str(tiny_folder), "--feature", str(feature_file), "--out", str(out),
                 "--params", "model.layers.*.mlp.*", "--steps", "6", "--eval-steps", "3", "--batch-size", "4",
                 "--lr", "1e-3", "--quiet", *extra])


def test_entry_point_is_installed():
    # the console script sits next to this interpreter (the virtual environment need not be activated)
    gradiend = shutil.which("gradiend", path=str(Path(sys.executable).parent))
    assert gradiend, f"the `gradiend` console script is not installed next to {sys.executable}"
    run = subprocess.run([gradiend, "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "train" in run.stdout and "models" in run.stdout


def test_models_lists_both_and_their_state(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "gemma-3-270m" in out and "smollm2-135m" in out and "(default)" in out
    assert "Gemma Terms of Use" in out


def test_train_writes_model_log_curve_and_results(tiny_folder, feature_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(tiny_folder, feature_file, out) == 0
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "training_log.jsonl", "training_curve.png",
            "results.json"} <= files
    results = json.loads((out / "results.json").read_text())
    assert {"validation_pearson_r", "test_pearson_r", "test_examples", "best_step"} <= set(results)
    assert results["test_examples"] == len(tiny_gender_feature().test)
    model = GradiendModel.from_pretrained(out)
    assert model.config.base_model_name_or_path == str(tiny_folder)
    assert model.config.feature_name == "gender" and model.config.training["max_steps"] == 6

    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "female -> +1, male -> -1" in info and "model.layers.0.mlp.gate_proj.weight" in info


@pytest.mark.distributed
def test_train_in_two_processes_with_fsdp_matches_one_process(tiny_folder, feature_file, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one, two = tmp_path / "one", tmp_path / "two"
    assert _train(tiny_folder, feature_file, one) == 0
    assert _train(tiny_folder, feature_file, two, "--num-processes", "2", "--fsdp") == 0
    single, double = GradiendModel.from_pretrained(one), GradiendModel.from_pretrained(two)
    assert double.config.training["processes"] == 2 and double.config.training["fsdp"] is True
    for key, value in single.state_dict().items():
        torch.testing.assert_close(double.state_dict()[key], value, rtol=1e-4, atol=1e-6)
    assert json.loads((two / "results.json").read_text())["best_step"] == single.config.training["best_step"]


def test_train_refuses_a_used_folder_then_resumes_or_overwrites(tiny_folder, feature_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(tiny_folder, feature_file, out) == 0
    before = (out / "model.safetensors").read_bytes()
    assert _train(tiny_folder, feature_file, out) == 2
    assert "is not empty" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before
    assert _train(tiny_folder, feature_file, out, "--resume") == 0  # finished run: nothing left to do
    assert (out / "model.safetensors").read_bytes() == before
    assert _train(tiny_folder, feature_file, out, "--overwrite") == 0


def test_unknown_parameter_pattern_is_a_clear_error(tiny_folder, feature_file, tmp_path, capsys):
    code = main(["train", "--model", str(tiny_folder), "--feature", str(feature_file), "--out",
                 str(tmp_path / "x"), "--params", "encoder.*", "--quiet"])
    assert code == 2 and "'encoder.*' matches no parameter" in capsys.readouterr().err


def test_info_on_a_folder_without_a_model(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    assert "holds no GRADIEND model" in capsys.readouterr().err


def test_push_uploads_a_trained_folder(hub, tiny_folder, feature_file, tmp_path):
    out = tmp_path / "run"
    assert _train(tiny_folder, feature_file, out) == 0
    repo_id = hub.new_repo_id("cli")
    assert main(["push", str(out), repo_id]) == 0
    assert {"config.json", "model.safetensors", "README.md"} <= set(HfApi().list_repo_files(repo_id))


def test_an_unknown_base_model_is_one_clear_line(tmp_path, capsys):
    assert main(["train", "--model", "no-such-model", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Could not load the base model 'no-such-model'" in err
    assert "gradiend models" in err


@pytest.mark.parametrize("command", ["models", "info", "train", "push", "evaluate", "encode", "search", "export",
                                     "apply", "merge", "bench", "demo"])
def test_every_subcommand_help_shows_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_code:
        main([command, "--help"])
    assert exit_code.value.code == 0
    assert f"example:\n  gradiend {command}" in capsys.readouterr().out


def test_num_processes_relaunches_the_same_command_under_torchrun(monkeypatch, tmp_path):
    import subprocess

    calls = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(subprocess, "call", lambda argv: calls.append(argv) or 0)
    assert main(["train", "--model", "m", "--feature", "gender", "--out", str(tmp_path / "o"), "--params",
                 "model.layers.*.mlp.*", "paper", "--num-processes", "3", "--fsdp", "--lr", "0.001"]) == 0
    (argv,) = calls
    assert argv[:7] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "3", "-m"]
    assert argv[7:9] == ["gradiend_hf.cli", "train"]
    rest = argv[9:]
    assert "--num-processes" not in rest and "--fsdp" in rest and "--quiet" not in rest
    assert rest[rest.index("--params") + 1: rest.index("--params") + 3] == ["model.layers.*.mlp.*", "paper"]
    assert rest[rest.index("--lr") + 1] == "0.001" and rest[rest.index("--out") + 1] == str(tmp_path / "o")
    # what the relaunched command parses is what the user typed
    from gradiend_hf.cli import build_parser

    parsed = vars(build_parser().parse_args(argv[8:]))
    assert parsed["params"] == ["model.layers.*.mlp.*", "paper"] and parsed["fsdp"] and parsed["num_processes"] == 1
    assert parsed["lr"] == 0.001 and parsed["steps"] == 150
