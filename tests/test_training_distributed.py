"""Two processes (torchrun, gloo on CPU) give the same GRADIEND as one process at the same global batch, with the
GRADIEND replicated or split by FSDP; a sharded run resumes exactly and saves an ordinary model folder."""

import json

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distributed_train_script import PARAMS
from tiny_models import bpe_tokenizer, tiny_gender_feature, tiny_llama

SCRIPT = Path(__file__).with_name("distributed_train_script.py")


def _run(command, tmp_path, expect_success=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    if expect_success:
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return run


def _torchrun() -> list[str]:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun (part of torch) is not on PATH"
    return [torchrun, "--standalone", "--nproc_per_node", "2", str(SCRIPT)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny base model, and one single-process run to compare the two-process runs with."""
    tmp_path = tmp_path_factory.mktemp("distributed")
    tokenizer = bpe_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_llama(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    one = tmp_path / "one.safetensors"
    _run([sys.executable, str(SCRIPT), str(model_dir), str(one)], tmp_path)
    return tmp_path, model_dir, load_file(str(one))


@pytest.mark.distributed
def test_two_processes_match_one(runs):
    tmp_path, model_dir, single = runs
    two = tmp_path / "two.safetensors"
    _run([*_torchrun(), str(model_dir), str(two)], tmp_path)
    single, double = dict(single), load_file(str(two))
    assert not int(double.pop("__sharded__")) and not int(single.pop("__sharded__"))
    assert int(single.pop("__processes__")) == 1 and int(double.pop("__processes__")) == 2
    assert torch.equal(single.pop("__best_step__"), double.pop("__best_step__"))
    assert single.keys() == double.keys()
    for key in single:
        # Same global batch, gradients averaged across processes: equal up to float summation order.
        torch.testing.assert_close(double[key], single[key], rtol=1e-4, atol=1e-6)
    # and training moved the weights: the comparison is not between two untouched initialisations
    from transformers import AutoModelForCausalLM

    from gradiend_hf import GradiendModel

    initial = GradiendModel.for_base_model(AutoModelForCausalLM.from_pretrained(model_dir),
                                           params=PARAMS, feature=tiny_gender_feature())
    initial.reset_parameters(0)
    moved = [k for k, v in initial.state_dict().items() if not torch.allclose(v, single[k], atol=1e-6)]
    assert len(moved) == len(single)


@pytest.mark.distributed
def test_fsdp_two_processes_match_one_and_hold_half(runs):
    from gradiend_hf import GradiendModel

    tmp_path, model_dir, single = runs
    out, two, measure = tmp_path / "fsdp-run", tmp_path / "fsdp.safetensors", tmp_path / "held.json"
    _run([*_torchrun(), str(model_dir), str(two), "--fsdp", "--output-dir", str(out), "--measure", str(measure)],
         tmp_path)
    double = load_file(str(two))
    assert int(double.pop("__processes__")) == 2 and int(double.pop("__sharded__")) == 1
    assert torch.equal(single["__best_step__"], double.pop("__best_step__"))
    for key in double:  # the same global batches; only the order of float sums differs
        torch.testing.assert_close(double[key], single[key], rtol=1e-4, atol=1e-6)
    # each process held half of the weights and AdamW moments (3n + 6n numbers) while it trained
    held = json.loads(measure.read_text())
    assert held["bytes"] == pytest.approx(3 * held["whole_model_bytes"] / 2, rel=0.01)
    # ... as the memory model says (it counts 3n + 6n; the one-number encoder bias and its moments sit on process 0)
    from gradiend_hf import training_memory

    n = (held["whole_model_bytes"] // 4 - 1) // 3
    estimate = training_memory(n, base_parameters=0, processes=2)
    assert held["bytes"] - (estimate.gradiend_weights + estimate.optimizer_state) == 3 * 4
    # the run saved one ordinary folder (no shards), and the checkpoints are one file per process
    saved = GradiendModel.from_pretrained(out)
    for key, value in saved.state_dict().items():
        assert torch.equal(value, double[key]), key
    last = out / "seed-0" / "checkpoint-last"
    assert sorted(p.name for p in last.glob("*.safetensors")) == ["shard-00000-of-00002.safetensors",
                                                                 "shard-00001-of-00002.safetensors"]
    assert json.loads((last / "trainer_state.json").read_text())["processes"] == 2


@pytest.mark.distributed
def test_fsdp_resume_after_a_crash_equals_an_uninterrupted_run(runs):
    tmp_path, model_dir, _ = runs
    reference, resumed, out = tmp_path / "ref.safetensors", tmp_path / "resumed.safetensors", tmp_path / "crashed"
    _run([*_torchrun(), str(model_dir), str(reference), "--fsdp"], tmp_path)
    crashed = _run([*_torchrun(), str(model_dir), str(tmp_path / "never"), "--fsdp", "--output-dir", str(out),
                    "--crash-at", "5"], tmp_path, expect_success=False)
    assert crashed.returncode != 0 and "simulated crash" in crashed.stderr
    assert json.loads((out / "seed-0" / "checkpoint-last" / "trainer_state.json").read_text())["step"] == 3
    # resuming without FSDP (one process) is refused with a clear message, and changes nothing
    refused = _run([sys.executable, str(SCRIPT), str(model_dir), str(tmp_path / "x"), "--output-dir", str(out),
                    "--resume"], tmp_path, expect_success=False)
    assert "holds 2 processes with FSDP; this run uses unsharded weights" in refused.stderr
    _run([*_torchrun(), str(model_dir), str(resumed), "--fsdp", "--output-dir", str(out), "--resume"], tmp_path)
    a, b = load_file(str(reference)), load_file(str(resumed))
    for key in a:
        assert torch.equal(a[key], b[key]), key
