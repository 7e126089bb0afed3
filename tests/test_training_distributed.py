"""Two processes (torchrun, gloo on CPU) give the same GRADIEND as one process at the same global batch."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tiny_models import bpe_tokenizer, tiny_gender_feature, tiny_llama

SCRIPT = Path(__file__).with_name("distributed_train_script.py")


def _run(command, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]


@pytest.mark.distributed
def test_two_processes_match_one(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    assert torchrun, "torchrun (part of torch) is not on PATH"
    tokenizer = bpe_tokenizer()
    model_dir = tmp_path / "tiny"
    tiny_llama(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    _run([sys.executable, str(SCRIPT), str(model_dir), str(one)], tmp_path)
    _run([torchrun, "--standalone", "--nproc_per_node", "2", str(SCRIPT), str(model_dir), str(two)], tmp_path)
    single, double = load_file(str(one)), load_file(str(two))
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
                                           params=["model.layers.*.mlp.*"], feature=tiny_gender_feature())
    initial.reset_parameters(0)
    moved = [k for k, v in initial.state_dict().items() if not torch.allclose(v, single[k], atol=1e-6)]
    assert len(moved) == len(single)
