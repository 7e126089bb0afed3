"""`gradiend demo` end to end on a tiny local model: every step's output, the report, the cards, reuse and refusal,
and both outcomes of the search (an edit beats the base model, or none does)."""

import json

import pytest
from huggingface_hub import ModelCard

import gradiend_hf.evaluation
from gradiend_hf import DeltaAdapter, GradiendModel
from gradiend_hf.benchmarks.paired import PairedDifference
from gradiend_hf.cli import main
from gradiend_hf.demo_report import NO_EDIT, goal_lines
from tiny_models import tiny_gender_feature, tiny_llama

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, bpe):
    tmp = tmp_path_factory.mktemp("demo")
    tiny_llama(len(bpe)).save_pretrained(tmp / "tiny")
    bpe.save_pretrained(tmp / "tiny")
    tiny_gender_feature().save_jsonl(tmp / "gender.jsonl")
    return tmp


def _argv(tmp, out, *extra):
    return ["demo", "--model", str(tmp / "tiny"), "--feature", str(tmp / "gender.jsonl"), "--out", str(tmp / out),
            "--quick", "--steps", "4", "--bench-limit", "4", "--quiet", *extra]


def _forcing(monkeypatch, outcome):
    """Run the real search, then make its outcome certain: one edit beats the base ("found"), or no point has a
    score or an LM score, so that the demo must score fallback candidates itself ("none")."""
    real = gradiend_hf.evaluation.search_decoder

    def patched(*args, **kwargs):
        result = real(*args, **kwargs)
        if kwargs.get("split") != "validation" or len(result.points) == 1:
            return result
        scored = [p for p in result.points if p.indices and p.alpha != 0.0]
        for point in result.points:
            if outcome == "found" and point is scored[0]:
                point.lm_score, point.lm_factor = result.base.lm_score, 1.0
                point.scores = {c: result.base.score(c) + 0.1 for c in result.criteria}
                point.pruned = None
            else:
                point.scores, point.lm_score, point.lm_factor = None, None, None
        return result

    monkeypatch.setattr(gradiend_hf.evaluation, "search_decoder", patched)


@pytest.fixture(scope="module")
def demo(inputs):
    argv = _argv(inputs, "run")
    assert main(argv) == 0
    return inputs, argv


def test_every_step_writes_its_outputs_and_the_report_shows_them(demo):
    tmp, _ = demo
    run = tmp / "run"
    for png in ("gradiend/training_curve.png", "evaluation/encoder_h_distribution.png", "search/search_heatmap.png",
                "benchmarks/benchmarks.png"):
        assert (run / png).read_bytes()[:8] == PNG, png
        assert f"]({png})" in (run / "report.md").read_text()
    report = (run / "report.md").read_text()
    for heading in ("## Time per step", "## 2. Encoder on held-out texts", "## 3. Decoder search",
                    "## 5. Bias benchmarks: base", "### Did the debiasing goal hold?"):
        assert heading in report
    state = json.loads((run / "demo_state.json").read_text())
    assert all(state["steps"][s]["done"] for s in ("train", "evaluate", "search", "export", "benchmark", "report"))
    chosen = state["steps"]["search"]
    # the tiny tokenizer has no built-in first name as one token: the search falls back to the feature's texts
    assert chosen["on"] == "feature" and "no single tokens" in chosen["why_feature"]
    assert "Points scored on the feature's own slot texts" in report
    if chosen["h"] is not None:
        adapter = DeltaAdapter.from_pretrained(run / "adapter")
        assert adapter.config.h == [chosen["h"]] and adapter.config.alpha == chosen["alpha"]
        assert (run / "adapter-lora" / "adapter_config.json").is_file()
    else:
        assert not (run / "adapter").exists() and NO_EDIT.capitalize() in report


def test_an_edit_that_beats_the_base_is_the_debiasing_adapter(inputs, monkeypatch):
    _forcing(monkeypatch, "found")
    assert main(_argv(inputs, "found")) == 0
    run = inputs / "found"
    state = json.loads((run / "demo_state.json").read_text())["steps"]
    assert state["search"]["edit_found"] and not state["search"]["fallback"]
    report = (run / "report.md").read_text()
    assert "## 5. Bias benchmarks: base vs debiased" in report and NO_EDIT not in report.lower()
    assert "| benchmark | bias type | metric | base | with the adapter | change [paired 95 %] | moved |" in report
    card = ModelCard.load(run / "adapter" / "README.md")
    assert "Debiasing edit" in card.text and NO_EDIT not in card.text.lower()
    metrics = [m for r in card.data.to_dict()["model-index"][0]["results"] for m in r["metrics"]]
    assert any(m["name"].startswith("SS gender") and "debiased" in m["name"] for m in metrics)
    gradiend = GradiendModel.from_pretrained(run / "gradiend")
    assert gradiend.config.results["eval_results"][0]["metric_type"] == "pearsonr"
    assert (run / "benchmarks" / "paired.json").is_file()


def test_without_a_winning_edit_nothing_is_called_debiased(inputs, monkeypatch):
    _forcing(monkeypatch, "none")
    assert main(_argv(inputs, "none", "--alpha", "±0.0001", "±0.001")) == 0
    run = inputs / "none"
    search = json.loads((run / "demo_state.json").read_text())["steps"]["search"]
    assert not search["edit_found"]
    report = (run / "report.md").read_text()
    assert f"**{NO_EDIT.capitalize()}**" in report
    assert "vs debiased" not in report and "| debiased" not in report  # no table or heading calls it debiased
    if search["fallback"]:  # the fallback was scored by the demo itself and keeps the LM score
        point = search["point"]
        base = json.loads((run / "search" / "search.json").read_text())["base"]
        assert point["alpha"] != 0.0 and point["lm_score"] >= 0.99 * base["lm_score"]
        card = ModelCard.load(run / "adapter" / "README.md").text
        assert NO_EDIT.capitalize() in card and "not a debiased model" in card
        assert "## 5. Bias benchmarks: base vs fallback edit" in report


def test_an_all_zero_grid_exports_no_adapter(inputs):
    assert main(_argv(inputs, "zero", "--alpha", "0")) == 0
    run = inputs / "zero"
    search = json.loads((run / "demo_state.json").read_text())["steps"]["search"]
    assert not search["edit_found"] and search["h"] is None  # α = 0 is the base itself: no edit, no fallback
    assert not (run / "adapter").exists()
    report = (run / "report.md").read_text()
    assert "no adapter was exported" in report and "## 5. Bias benchmarks: base\n" in report


def test_a_second_run_reuses_finished_steps(demo, capsys):
    tmp, argv = demo
    before = json.loads((tmp / "run" / "demo_state.json").read_text())
    assert main(argv) == 0
    after = json.loads((tmp / "run" / "demo_state.json").read_text())
    for step in ("train", "evaluate", "search", "export", "benchmark"):
        assert after["steps"][step] == before["steps"][step]
    assert "train: done in an earlier run, reused" in capsys.readouterr().out


def test_other_settings_in_the_same_folder_are_refused(demo, capsys):
    tmp, argv = demo
    changed = list(argv)
    changed[changed.index("--steps") + 1] = "5"
    assert main(changed) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "--overwrite" in err


def _difference(suite, metric, base, other, ci, group="gender"):
    return PairedDifference(suite, group, metric, base, other, other - base, ci, 100)


def test_goal_lines_judge_each_benchmark_on_paired_intervals():
    paired = [_difference("stereoset", "ss", 68.0, 62.0, (-8.0, -4.0)),
              _difference("seat", "mean_abs_effect_size", 0.8, 0.5, (-0.4, -0.2)),
              _difference("crows", "metric", 57.0, 58.0, (-1.0, 3.0)),
              _difference("stereoset", "lms", 92.0, 91.5, (-0.9, -0.1)),
              _difference("lm_score", "perplexity", 50.0, 52.0, (1.0, 3.0), group="overall")]
    lines = goal_lines(paired, "gender")
    assert "6 points closer to 50" in lines[0] and lines[0].endswith("**met**")
    assert "(-37.5 %)" in lines[1] and lines[1].endswith("**met**")
    assert "CrowS-Pairs" in lines[2] and "not moved" in lines[2]
    assert "a drop of 0.5 points" in lines[3] and lines[3].endswith("**met**")
    assert "(+4.00 %" in lines[4] and lines[4].endswith("**met**")
    # too small, or an interval that includes 0, or too costly: missed
    lines = goal_lines([_difference("stereoset", "ss", 68.0, 65.0, (-5.0, -1.0)),
                        _difference("seat", "mean_abs_effect_size", 0.8, 0.4, (-0.5, 0.1)),
                        _difference("lm_score", "perplexity", 50.0, 53.0, (2.0, 4.0), group="overall")], "gender")
    assert lines[0].endswith("**missed**") and lines[1].endswith("**missed**") and lines[2].endswith("**missed**")
    assert "interval that includes 0" not in lines[0] and "further from" not in lines[0]
