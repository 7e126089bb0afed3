"""Crash-safe saves: real processes killed with SIGKILL mid-save leave the previous save loadable; one writer per
folder; --overwrite never removes the working directory or files gradiend_hf did not write."""

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from peft import PeftModel

import gradiend_hf as gh
from gradiend_hf import atomic_io
from gradiend_hf.adapters import DeltaAdapter
from gradiend_hf.atomic_io import (
    PAUSE_ENV,
    PAUSE_FILE_ENV,
    atomic_folder,
    atomic_write_text,
    check_output_dir,
    remove_our_outputs,
)
from gradiend_hf.benchmarks import BenchmarkReport, Score
from gradiend_hf.cli import main
from gradiend_hf.errors import OutputBusyError, OutputExistsError
from gradiend_hf.evaluation import DecoderSearchResult
from gradiend_hf.evaluation.search import SearchPoint

DOWN = "model.layers.0.mlp.down_proj.weight"


def _adapter(base, value):
    return DeltaAdapter.from_deltas({DOWN: torch.full((32, 64), float(value))}, base_model=base)


def _value(folder):
    return float(DeltaAdapter.from_pretrained(folder).tensors[DOWN][0, 0])


def _killed_at(point, save, tmp_path):
    """Run `save()` in a forked child that pauses at `point` (see `atomic_io.PAUSE_ENV`); SIGKILL it there.

    The child only writes files (no threaded maths), which is safe after a fork. Returns the child's pid.
    """
    marker = tmp_path / f"paused-{time.monotonic_ns()}"

    def child():
        os.environ[PAUSE_ENV], os.environ[PAUSE_FILE_ENV] = point, str(marker)
        save()
        os._exit(3)  # finished without reaching the pause point: the test fails below

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.is_alive() and time.monotonic() < deadline, f"the child never reached {point!r}"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    assert process.exitcode == -signal.SIGKILL
    return process.pid


def _hidden(folder):
    return sorted(p.name for p in Path(folder).parent.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize(("point", "survivor"), [("write:adapter_model", 1.0), ("rename:adapter_config", 1.0),
                                                 ("staged:debias", 1.0), ("swapped:debias", 2.0)])
def test_a_delta_adapter_killed_mid_save_leaves_a_loadable_save(llama, tmp_path, point, survivor):
    folder = tmp_path / "debias"
    _adapter(llama, 1.0).save_pretrained(folder)
    (folder / "notes.txt").write_text("mine")
    _killed_at(point, lambda: _adapter(llama, 2.0).save_pretrained(folder), tmp_path)
    assert _value(folder) == survivor  # the old save, or (killed after the swap) the complete new one
    assert (folder / "notes.txt").read_text() == "mine"
    _adapter(llama, 3.0).save_pretrained(folder)  # the dead writer's lock and leftovers do not get in the way
    assert _value(folder) == 3.0 and (folder / "notes.txt").read_text() == "mine"
    assert _hidden(folder) == []


def test_a_gradiend_model_killed_before_the_swap_keeps_the_previous_save(llama, tmp_path):
    folder = tmp_path / "gradiend"
    model = gh.GradiendModel.for_base_model(llama, params=["model.layers.0.mlp.down_proj.weight"], seed=0)
    model.save_pretrained(folder)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.decoder.weights[0].add_(1.0)
    _killed_at("staged:gradiend", lambda: model.save_pretrained(folder), tmp_path)
    loaded = gh.GradiendModel.from_pretrained(folder)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in before.items())


def test_a_peft_export_killed_inside_its_weights_write_keeps_the_old_export(llama, bpe, tmp_path):
    folder = tmp_path / "lora"
    _adapter(llama, 1.0).export_lora(folder, base_model=llama)
    _killed_at("write:adapter_model", lambda: _adapter(llama, 2.0).export_lora(folder, overwrite=True), tmp_path)
    import copy

    merged = PeftModel.from_pretrained(copy.deepcopy(llama), str(folder)).merge_and_unload()
    expected = dict(llama.named_parameters())[DOWN] + 1.0
    assert torch.equal(dict(merged.named_parameters())[DOWN], expected)


def _search_result(h):
    base = SearchPoint(h=0.0, alpha=0.0, indices={"balanced": 0.2, "female": 0.5, "male": 0.5}, lm_factor=1.0,
                       is_base=True)
    point = SearchPoint(h=h, alpha=0.1, indices={"balanced": 0.9, "female": 0.4, "male": 0.6}, lm_factor=0.9)
    return DecoderSearchResult(feature="gender", classes=("female", "male"), base=base, points=[point])


def test_search_and_benchmark_results_killed_mid_save_keep_the_previous_ones(tmp_path):
    folder = tmp_path / "search"
    _search_result(1.0).save(folder)
    _killed_at("staged:search", lambda: _search_result(-1.0).save(folder), tmp_path)
    assert DecoderSearchResult.from_json(folder / "search.json").points[0].h == 1.0
    assert (folder / "search_heatmap.png").is_file() and (folder / "search.csv").is_file()

    def report(ss):
        return BenchmarkReport(model="m", lm_kind="causal",
                               results={"stereoset": {"gender": {"ss": Score(ss, None, 10)}}})

    path = tmp_path / "bench" / "base.json"
    report(60.0).save(path)
    _killed_at("write:base.json", lambda: report(50.0).save(path), tmp_path)
    assert BenchmarkReport.load(path).results["stereoset"]["gender"]["ss"].value == 60.0


def test_a_second_process_writing_the_same_folder_gets_a_clear_error(llama, tmp_path):
    folder = tmp_path / "debias"
    _adapter(llama, 1.0).save_pretrained(folder)
    marker = tmp_path / "paused"

    def child():
        os.environ[PAUSE_ENV], os.environ[PAUSE_FILE_ENV] = "staged:debias", str(marker)
        _adapter(llama, 2.0).save_pretrained(folder)
        os._exit(3)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    try:
        while not marker.exists():
            assert process.is_alive()
            time.sleep(0.005)
        with pytest.raises(OutputBusyError, match=rf"being written by another process \(pid {process.pid}"):
            _adapter(llama, 4.0).save_pretrained(folder)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.join()
    assert _value(folder) == 1.0
    _adapter(llama, 4.0).save_pretrained(folder)  # the killed holder's flock is gone with it
    assert _value(folder) == 4.0


def test_another_thread_of_the_same_process_is_refused_too(tmp_path):
    import threading

    folder = tmp_path / "out"
    errors = []
    with atomic_folder(folder, what="test") as staging:
        (staging / "a.txt").write_text("a")
        thread = threading.Thread(target=lambda: errors.append(_try(lambda: atomic_write_in(folder))))
        thread.start()
        thread.join()
    assert isinstance(errors[0], OutputBusyError) and "another thread" in str(errors[0])
    assert (folder / "a.txt").read_text() == "a"


def atomic_write_in(folder):
    with atomic_folder(folder, what="test") as staging:
        (staging / "b.txt").write_text("b")


def _try(fn):
    try:
        fn()
    except Exception as error:  # noqa: BLE001 - handed back to the test
        return error
    return None


def test_a_failing_block_leaves_the_folder_as_it_was(tmp_path):
    folder = tmp_path / "out"
    atomic_write_text(folder / "config.json", "{}")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_folder(folder, what="test", replace=True) as staging:
            (staging / "config.json").write_text('{"new": 1}')
            raise RuntimeError("boom")
    assert (folder / "config.json").read_text() == "{}" and _hidden(folder) == []


def test_a_mount_point_is_saved_file_by_file_with_a_warning(llama, tmp_path, monkeypatch):
    folder = tmp_path / "volume"
    _adapter(llama, 1.0).save_pretrained(folder)
    (folder / "notes.txt").write_text("mine")
    real = os.path.ismount
    monkeypatch.setattr(atomic_io.os.path, "ismount", lambda path: str(path) == str(folder) or real(path))
    with pytest.warns(UserWarning, match="is a mount point .* one by one, each atomically"):
        _adapter(llama, 2.0).save_pretrained(folder)
    assert _value(folder) == 2.0 and (folder / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "adapter_config.json",
                                                        "adapter_model.safetensors", "notes.txt"]


def test_a_resave_drops_stale_weight_shards_but_keeps_other_files(llama, tmp_path):
    folder = tmp_path / "gradiend"
    model = gh.GradiendModel.for_base_model(llama, params=["model.layers.*.mlp.*"], seed=0)
    model.save_pretrained(folder, max_shard_size="20KB")
    assert (folder / "model.safetensors.index.json").is_file()
    (folder / "training_log.jsonl").write_text("{}\n")
    model.save_pretrained(folder)
    names = {p.name for p in folder.iterdir()}
    assert names == {"config.json", "model.safetensors", "README.md", "training_log.jsonl"}
    gh.GradiendModel.from_pretrained(folder)


# -- overwriting ---------------------------------------------------------------------------------------------------
def test_overwrite_never_touches_the_working_directory_or_above(tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    atomic_write_text(work / "config.json", "{}")  # ours only, and still refused: it is where we are
    monkeypatch.chdir(work / "sub")
    for folder in (work, Path(".."), tmp_path):
        with pytest.raises(OutputExistsError, match="working directory or a folder above it"):
            check_output_dir(folder, overwrite=True, what="output")
    monkeypatch.chdir(work)
    (work / "notes.txt").write_text("mine")
    assert main(["merge", str(tmp_path / "missing"), "--out", ".", "--overwrite"]) == 2
    assert main(["demo", "--out", ".", "--overwrite", "--quiet"]) == 2
    assert (work / "notes.txt").read_text() == "mine" and (work / "config.json").is_file()


def test_overwrite_replaces_only_folders_of_our_own_outputs(llama, tmp_path):
    folder = tmp_path / "out"
    _adapter(llama, 1.0).save_pretrained(folder)
    (folder / "seed-0" / "checkpoint-last").mkdir(parents=True)
    (folder / "seed-0" / "checkpoint-last" / "optimizer.safetensors").write_bytes(b"")
    assert check_output_dir(folder, overwrite=True, what="output") == folder  # all ours
    (folder / "seed-0" / "thesis.tex").write_text("mine")
    (folder / "README.md").write_text("# my own card\n")
    with pytest.raises(OutputExistsError, match=r"holds `README\.md`, `seed-0/thesis\.tex`, which gradiend_hf did "
                                                r"not write"):
        remove_our_outputs(folder, what="output")
    assert (folder / "seed-0" / "thesis.tex").read_text() == "mine"
    with pytest.raises(OutputExistsError, match="is not empty"):
        check_output_dir(folder, overwrite=False, what="output")


def test_bench_tells_two_adapter_folders_of_the_same_name_apart():
    from gradiend_hf.cli_support import report_names
    from gradiend_hf.errors import BenchmarkError

    assert report_names(["runs/a/adapter", "runs/b/adapter"]) == ["a--adapter", "b--adapter"]
    assert report_names(["out/base"]) == ["out--base"]  # never the name of the base model's report
    with pytest.raises(BenchmarkError, match="twice"):
        report_names(["runs/a", "runs/a/"])


def test_every_writer_output_counts_as_ours_so_overwrite_can_replace_it(llama, tmp_path):
    from gradiend_hf.atomic_io import foreign_entries

    out = tmp_path / "out"
    adapter = _adapter(llama, 1.0)
    adapter.save_pretrained(out / "adapter")
    adapter.export_lora(out / "adapter-lora", base_model=llama)
    adapter.merge_and_save(llama, out / "merged")
    gh.GradiendModel.for_base_model(llama, params=[DOWN], seed=0).save_pretrained(out / "gradiend")
    _search_result(1.0).save(out / "search")
    BenchmarkReport(model="m", lm_kind="causal", results={}).save(out / "benchmarks" / "some-adapter.json")
    assert foreign_entries(out) == []
    assert check_output_dir(out, overwrite=True, what="output") == out
