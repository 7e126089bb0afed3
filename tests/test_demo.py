"""`gradiend demo` end to end on a tiny local model: every step's output, the report, the cards, reuse and refusal."""

import json

import pytest
from huggingface_hub import ModelCard

from gradiend_hf import DeltaAdapter, GradiendModel
from gradiend_hf.cli import main
from tiny_models import tiny_gender_feature, tiny_llama

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory, bpe):
    tmp = tmp_path_factory.mktemp("demo")
    tiny_llama(len(bpe)).save_pretrained(tmp / "tiny")
    bpe.save_pretrained(tmp / "tiny")
    tiny_gender_feature().save_jsonl(tmp / "gender.jsonl")
    argv = ["demo", "--model", str(tmp / "tiny"), "--feature", str(tmp / "gender.jsonl"), "--out", str(tmp / "run"),
            "--quick", "--steps", "4", "--bench-limit", "4", "--quiet"]
    assert main(argv) == 0
    return tmp, argv


def test_every_step_writes_its_outputs_and_the_report_shows_them(demo):
    tmp, _ = demo
    run = tmp / "run"
    for png in ("gradiend/training_curve.png", "evaluation/encoder_h_distribution.png", "search/search_heatmap.png",
                "benchmarks/benchmarks.png"):
        assert (run / png).read_bytes()[:8] == PNG, png
        assert f"]({png})" in (run / "report.md").read_text()
    report = (run / "report.md").read_text()
    for heading in ("## Time per step", "## 2. Encoder on held-out texts", "## 3. Decoder search",
                    "## 5. Bias benchmarks: base vs debiased", "### Did the debiasing goal hold?"):
        assert heading in report
    assert "StereoSet SS (gender)" in report and "| base | test |" in report
    state = json.loads((run / "demo_state.json").read_text())
    assert all(state["steps"][s]["done"] for s in ("train", "evaluate", "search", "export", "benchmark", "report"))
    chosen = state["steps"]["search"]
    adapter = DeltaAdapter.from_pretrained(run / "adapter")
    assert adapter.config.h == [chosen["h"]] and adapter.config.alpha == chosen["alpha"]
    assert (run / "adapter-lora" / "adapter_config.json").is_file()


def test_the_cards_carry_the_measured_results(demo):
    tmp, _ = demo
    run = tmp / "run"
    adapter_card = ModelCard.load(run / "adapter" / "README.md")
    metrics = [m for r in adapter_card.data.to_dict()["model-index"][0]["results"] for m in r["metrics"]]
    assert any(m["name"].startswith("SS gender") for m in metrics)
    assert "Did" not in adapter_card.text and "StereoSet SS" in adapter_card.text
    gradiend = GradiendModel.from_pretrained(run / "gradiend")
    assert gradiend.config.results["eval_results"][0]["metric_type"] == "pearsonr"
    assert "model-index" in (run / "gradiend" / "README.md").read_text()


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


def test_goal_lines_judge_each_benchmark_plainly():
    from gradiend_hf.benchmarks import BenchmarkReport
    from gradiend_hf.benchmarks.score import Score
    from gradiend_hf.demo_report import goal_lines

    def report(ss, ss_ci, seat, lms):
        return BenchmarkReport(model="m", lm_kind="causal", results={
            "stereoset": {"gender": {"ss": Score(ss, ss_ci, 10), "lms": Score(lms, None, 10)}},
            "seat": {"gender": {"mean_abs_effect_size": Score(seat, None, 3)}},
        })

    lines = goal_lines(report(70.0, (65.0, 75.0), 0.8, 90.0), report(55.0, (52.0, 58.0), 0.9, 89.5), "gender")
    assert "met: closer to neutral, outside the base's 95 % interval" in lines[0]
    assert "SEAT" in lines[1] and "missed: not closer to neutral" in lines[1]
    assert "a drop of 0.5 points" in lines[2] and lines[2].endswith("**met**")

    lines = goal_lines(report(70.0, (65.0, 75.0), 0.8, 90.0), report(68.0, (63.0, 73.0), 0.8, 90.0), "gender")
    assert "within the 95 % intervals" in lines[0]
    assert "LMS (gender): 90 → 90, unchanged" in lines[2]
    lines = goal_lines(report(70.0, None, 0.8, 90.0), report(70.0, None, 0.8, 88.5), "gender")
    assert "a drop of 1.5 points" in lines[2] and lines[2].endswith("**missed**")
