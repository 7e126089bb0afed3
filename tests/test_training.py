"""GradiendTrainer on tiny models: it learns the feature, selects and normalises, resumes exactly, guards outputs."""

import json
import os
import signal
import threading

import pytest
import torch

from gradiend_hf import GradiendModel, GradiendTrainer, TrainingArguments, TrainingError
from gradiend_hf.evaluation import pearson
from gradiend_hf.training import BEST_CHECKPOINT, CURVE_NAME, LAST_CHECKPOINT, LOG_NAME
from tiny_models import tiny_gender_feature, tiny_llama


@pytest.fixture(scope="module")
def feature():
    return tiny_gender_feature()


def _trainer(bpe, feature, **arguments):
    base = tiny_llama(len(bpe))
    model = GradiendModel.for_base_model(base, params=["model.layers.*.mlp.*"], feature=feature)
    defaults = dict(max_steps=12, eval_steps=4, batch_size=4, learning_rate=1e-3, progress_bar=False)
    defaults.update(arguments)
    return GradiendTrainer(model, base, bpe, feature, TrainingArguments(**defaults))


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_separates_the_classes_and_saves_everything(bpe, feature, tmp_path):
    trainer = _trainer(bpe, feature, output_dir=str(tmp_path / "run"), max_steps=24)
    result = trainer.train()
    model = trainer.model
    assert result.best_correlation > 0.9 and not result.interrupted
    # sign normalisation: the first class encodes positive
    h = model.encode_examples(trainer.engine, feature.test)[:, 0]
    labels = torch.tensor([feature.label_value(e.label) for e in feature.test])
    assert pearson(h, labels) > 0.8
    assert float(h[labels > 0].mean()) > float(h[labels < 0].mean())
    out = tmp_path / "run"
    assert {"config.json", "model.safetensors", "README.md", LOG_NAME, CURVE_NAME, "seed-0"} <= \
        {p.name for p in out.iterdir()}
    assert (out / CURVE_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 25))
    assert sum("validation_pearson_r" in r for r in records) == 6
    assert [r["class"] for r in records[:4]] == ["female", "male", "female", "male"]  # balanced classes
    saved = GradiendModel.from_pretrained(out)
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), model.state_dict().values()))
    assert saved.config.training["best_step"] == result.best_step
    assert saved.config.training["validation_pearson_r"] == pytest.approx(result.best_correlation, abs=1e-4)


def test_the_best_checkpoint_is_kept(bpe, feature, monkeypatch):
    trainer = _trainer(bpe, feature, max_steps=12, eval_steps=4)
    scores = iter([0.5, -0.9, 0.7])  # step 8 is best (|r|), and negative
    snapshots = {}
    original_validate = trainer.validate

    def scripted_validate():
        original_validate()
        r = next(scores)
        snapshots[r] = _state(trainer.model)
        return r, {}

    monkeypatch.setattr(trainer, "validate", scripted_validate)
    result = trainer.train()
    assert result.best_step == 8 and result.best_correlation == pytest.approx(0.9)
    expected = GradiendModel(trainer.model.config)
    expected.load_state_dict(snapshots[-0.9])
    expected.flip_sign()  # r < 0: the sign is flipped so that the first class encodes +1
    assert all(torch.equal(a, b) for a, b in zip(expected.state_dict().values(), trainer.model.state_dict().values()))


def test_resumed_training_ends_with_the_same_weights(bpe, feature, tmp_path, monkeypatch):
    reference = _trainer(bpe, feature, output_dir=str(tmp_path / "a"))
    reference.train()

    interrupted = _trainer(bpe, feature, output_dir=str(tmp_path / "b"))
    original_step = interrupted.training_step
    calls = {"n": 0}

    def step_then_stop(optimizer, examples):
        loss = original_step(optimizer, examples)
        calls["n"] += 1
        if calls["n"] == 6:  # a Ctrl-C arrives during step 6
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    monkeypatch.setattr(interrupted, "training_step", step_then_stop)
    partial = interrupted.train()
    assert partial.interrupted
    state = json.loads((tmp_path / "b" / "seed-0" / LAST_CHECKPOINT / "trainer_state.json").read_text())
    assert state["step"] == 6 and not state["finished"]
    assert (tmp_path / "b" / "seed-0" / BEST_CHECKPOINT).is_dir()

    resumed = _trainer(bpe, feature, output_dir=str(tmp_path / "b"))
    result = resumed.train(resume_from_checkpoint=True)
    assert not result.interrupted
    for (key, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), key
    log = [json.loads(line) for line in (tmp_path / "b" / LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 13))


def test_several_seeds_keep_the_best(bpe, feature):
    trainer = _trainer(bpe, feature, num_seeds=2, max_steps=8)
    result = trainer.train()
    assert [s.seed for s in result.seeds] == [0, 1]
    assert result.best_correlation == pytest.approx(max(abs(s.best_correlation) for s in result.seeds))
    assert trainer.model.config.training["seeds"] == [0, 1]


def test_early_stopping(bpe, feature, monkeypatch):
    trainer = _trainer(bpe, feature, max_steps=40, eval_steps=2, early_stopping_patience=2)
    monkeypatch.setattr(trainer, "validate", lambda: (0.5, {}))
    result = trainer.train()
    assert result.seeds[0].steps_done == 6  # best at step 2, then two validations without improvement


def test_a_non_empty_output_folder_is_never_overwritten_silently(bpe, feature, tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(TrainingError, match="is not empty.*--resume.*--overwrite"):
        _trainer(bpe, feature, output_dir=str(tmp_path)).train()
    assert (tmp_path / "keep.txt").read_text() == "user data"
    _trainer(bpe, feature, output_dir=str(tmp_path), overwrite_output_dir=True, max_steps=4).train()
    assert (tmp_path / "keep.txt").read_text() == "user data"  # only our own files are replaced


@pytest.mark.parametrize(
    ("arguments", "match"),
    [(dict(max_steps=0), "max_steps"), (dict(learning_rate=-1.0), "learning_rate"),
     (dict(mixed_precision="fp8"), "mixed_precision")],
)
def test_bad_arguments(arguments, match):
    with pytest.raises(TrainingError, match=match):
        TrainingArguments(**arguments)


def test_feature_must_match_the_model(bpe, feature):
    base = tiny_llama(len(bpe))
    model = GradiendModel.for_base_model(base, feature={"name": "x", "classes": ["a", "b"]})
    with pytest.raises(TrainingError, match="classes"):
        GradiendTrainer(model, base, bpe, feature, TrainingArguments(progress_bar=False))


def test_batches_depend_only_on_seed_and_step(bpe, feature):
    a, b = _trainer(bpe, feature), _trainer(bpe, feature)
    assert a.batch_for_step(0, 5) == b.batch_for_step(0, 5)
    assert a.batch_for_step(0, 5) != a.batch_for_step(1, 5)
    cls, batch = a.batch_for_step(0, 2)
    assert cls == "male" and all(e.label == "male" for e in batch) and len(batch) == 4


def test_stop_request_outside_the_main_thread_is_harmless(bpe, feature):
    results = []
    thread = threading.Thread(target=lambda: results.append(_trainer(bpe, feature, max_steps=2).train()))
    thread.start()
    thread.join()
    assert results and not results[0].interrupted


def test_bf16_autocast_runs_and_keeps_fp32_gradients(bpe, feature):
    # Mixed precision is meant for GPUs; CPU autocast exercises the same code path here.
    trainer = _trainer(bpe, feature, max_steps=2, eval_steps=2, mixed_precision="bf16", use_cpu=True)
    _, batch = trainer.batch_for_step(0, 1)
    pair = trainer.engine.gradients(batch, autocast=trainer.autocast())
    assert all(g.dtype == torch.float32 for g in pair.source.values())
    exact = trainer.engine.gradients(batch)
    name = next(iter(pair.source))
    assert not torch.equal(pair.source[name], exact.source[name])  # autocast really was on
    assert float((pair.source[name] - exact.source[name]).norm() / exact.source[name].norm()) < 0.1
    assert trainer.train().seeds[0].steps_done == 2


_KILLED_RUN = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[2])
from tiny_models import bpe_tokenizer, tiny_gender_feature, tiny_llama
from gradiend_hf import GradiendModel, GradiendTrainer, TrainingArguments
bpe, feature = bpe_tokenizer(), tiny_gender_feature()
base = tiny_llama(len(bpe))
model = GradiendModel.for_base_model(base, params=["model.layers.*.mlp.*"], feature=feature)
arguments = TrainingArguments(output_dir=sys.argv[1], max_steps=12, eval_steps=4, batch_size=4, learning_rate=1e-3,
                              progress_bar=False)
GradiendTrainer(model, base, bpe, feature, arguments).train()
"""


def test_a_run_killed_inside_a_checkpoint_write_resumes_to_the_same_weights(bpe, feature, tmp_path):
    """A real `python` process trains; SIGKILL arrives while it writes the optimizer state of its second checkpoint
    (step 8). Meanwhile a second run into the folder is refused; the resumed run ends bit-identical."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    from gradiend_hf.atomic_io import PAUSE_ENV, PAUSE_FILE_ENV
    from gradiend_hf.errors import OutputBusyError

    run, marker = tmp_path / "run", tmp_path / "paused"
    env = {**os.environ, PAUSE_ENV: "write:optimizer.safetensors@2", PAUSE_FILE_ENV: str(marker)}
    child = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(run), str(Path(__file__).parent)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic as the child's, so the weights can be compared bit for bit
    try:
        reference = _trainer(bpe, feature, output_dir=str(tmp_path / "reference"))
        reference.train()
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the child never reached its second checkpoint"
            time.sleep(0.05)
        with pytest.raises(OutputBusyError, match=rf"pid {child.pid}"):
            _trainer(bpe, feature, output_dir=str(run)).train(resume_from_checkpoint=True)
        child.send_signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
        state = json.loads((run / "seed-0" / LAST_CHECKPOINT / "trainer_state.json").read_text())
        assert state["step"] == 4  # the half-written step-8 checkpoint never replaced it
        resumed = _trainer(bpe, feature, output_dir=str(run))
        assert not resumed.train(resume_from_checkpoint=True).interrupted
    finally:
        torch.set_num_threads(threads)
        if child.poll() is None:
            child.kill()
            child.wait()
    for (key, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), key
    assert not [p.name for p in (run / "seed-0").iterdir() if p.name.startswith(".")]
