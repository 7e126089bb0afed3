"""`gradiend compare --quick` end to end on a tiny model: every variant, the ranked table, reuse, and bad input."""

import json

import pytest
import torch

from gradiend_hf.adapters import RepresentationAdapter, SelfDebiasAdapter, load_adapter
from gradiend_hf.benchmarks import BenchmarkReport, Score
from gradiend_hf.cli import main
from gradiend_hf.adapters import DeltaAdapter
from gradiend_hf.compare import METHODS, CompareArguments, run_compare
from gradiend_hf.compare_report import LM_SUITE, ComparisonRow, proportional_ranks, rank_rows
from gradiend_hf.errors import AdapterCompatibilityError, GradiendConfigError
from tiny_models import tiny_gender_feature, tiny_llama

PNG = b"\x89PNG\r\n\x1a\n"
QUICK = ["--quick", "--gradiend-steps", "4", "--pretrain-steps", "3", "--bench-limit", "4", "--lm-texts", "4",
         "--max-pairs", "40", "--bootstrap", "50", "--quiet"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, bpe):
    tmp = tmp_path_factory.mktemp("compare")
    tiny_llama(len(bpe)).save_pretrained(tmp / "tiny")
    bpe.save_pretrained(tmp / "tiny")
    tiny_gender_feature().save_jsonl(tmp / "gender.jsonl")
    glue = tmp / "glue" / "SST-2"
    glue.mkdir(parents=True)
    (glue / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"a film {i} .\t{i % 2}\n" for i in range(8)))
    return tmp


@pytest.fixture(scope="module")
def run(tiny):
    argv = ["compare", "--model", str(tiny / "tiny"), "--feature", str(tiny / "gender.jsonl"), "--out",
            str(tiny / "run"), "--glue", str(tiny / "glue"), "--glue-limit", "4", *QUICK]
    assert main(argv) == 0
    return tiny / "run", argv


def test_every_variant_is_benchmarked_and_ranked(run):
    out, _ = run
    assert (out / "comparison.png").read_bytes()[:8] == PNG
    data = json.loads((out / "comparison.json").read_text())
    rows = data["rows"]
    assert {row["name"] for row in rows} == {"base", *METHODS} and len(rows) == 15
    means = [row["mean_rank"] for row in rows]
    assert means == sorted(means, reverse=True) and all(0 <= m <= 1 for m in means)
    for key in ("ss", "seat", "crows"):
        ranks = sorted(row["ranks"][key] for row in rows if row["ranks"][key] is not None)
        assert 0 <= ranks[0] <= ranks[-1] <= 1 and len(ranks) >= 14  # ties share their places
    self_debias = next(row for row in rows if row["name"] == "self_debias")
    assert self_debias["scores"]["seat"] is None and self_debias["ranks"]["seat"] is None
    assert self_debias["mean_rank"] == self_debias["ranks"]["ss"]
    table = (out / "comparison.md").read_text()
    assert "| # | variant | mean rank (SS, SEAT) |" in table and "SST-2 acc." in table
    assert "SelfDebias: seat: not applicable" in table and "GRADIEND + INLP" in table
    report = BenchmarkReport.load(out / "variants" / "cda+inlp" / "report.json")
    assert set(report.results) == {"stereoset", "crows", "seat", LM_SUITE}


def test_combinations_refit_the_projection_on_the_changed_model(run):
    out, _ = run
    alone = load_adapter(out / "variants" / "inlp" / "adapter")
    combined = load_adapter(out / "variants" / "gradiend+inlp" / "adapter")
    assert isinstance(combined, RepresentationAdapter) and alone.config.fitted_with is None
    assert combined.config.fitted_with and combined.config.method == "inlp"
    assert isinstance(load_adapter(out / "variants" / "self_debias" / "adapter"), SelfDebiasAdapter)
    assert (out / "weights" / "cda" / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "weights" / "dropout" / "pretraining.json").read_text())["settings"]["steps"] == 3


def test_a_second_run_reuses_everything_and_other_settings_are_refused(run, capsys):
    out, argv = run
    before = json.loads((out / "compare_state.json").read_text())
    assert main(argv) == 0
    assert json.loads((out / "compare_state.json").read_text())["variants"] == before["variants"]
    assert "rlace: done in an earlier run, reused" in capsys.readouterr().out
    changed = list(argv)
    changed[changed.index("--bench-limit") + 1] = "5"
    assert main(changed) == 2 and "other settings" in capsys.readouterr().err


def test_glue_with_another_limit_is_added_to_the_finished_variants_alone(run, capsys):
    out, argv = run
    before = json.loads((out / "compare_state.json").read_text())["variants"]
    reports = {p: p.read_bytes() for p in (out / "variants").glob("*/report.json")}
    more = list(argv)
    more[more.index("--glue-limit") + 1] = "6"
    assert main(more) == 0
    printed = capsys.readouterr().out
    assert printed.count("GLUE added") == 15 and "other settings" not in printed
    after = json.loads((out / "compare_state.json").read_text())
    assert after["settings"]["glue_limit"] == 6
    assert {v: s["seconds"] for v, s in after["variants"].items()} == {v: s["seconds"] for v, s in before.items()}
    assert all(p.read_bytes() == data for p, data in reports.items()) and len(reports) == 15
    for glue in (out / "variants").glob("*/glue.json"):
        saved = json.loads(glue.read_text())
        assert saved["limit"] == 6 and saved["scores"]["sst2"]["count"] == 6, glue
    assert "added to the finished variants later" in (out / "comparison.md").read_text()
    assert main(more) == 0 and "GLUE added" not in capsys.readouterr().out  # current now: nothing is redone
    without = [a for i, a in enumerate(argv) if not {a, argv[i - 1]} & {"--glue", "--glue-limit"}]
    assert main(without) == 0  # a run without GLUE keeps the saved scores and reports the limit they were made with
    assert "≤ 6 dev examples per task" in (out / "comparison.md").read_text()


def test_bad_input_is_one_line_and_writes_nothing(tiny, tmp_path, capsys):
    few = tiny_gender_feature()
    few.train = [e for e in few.train if e.label == "female"][:3] + [e for e in few.train if e.label == "male"][:3]
    few.save_jsonl(tmp_path / "gender.jsonl")
    base = ["compare", "--model", str(tiny / "tiny"), *QUICK]
    assert main([*base, "--feature", str(tmp_path / "gender.jsonl"), "--methods", "inlp",
                 "--out", str(tmp_path / "few")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "at least 8 counterfactual pairs" in errors[0] and not (tmp_path / "few").exists()
    with pytest.raises(GradiendConfigError, match="Unknown methods"):
        CompareArguments(methods=["inlp", "magic"]).chosen_methods()
    wrong = tmp_path / "wrong"
    DeltaAdapter.from_deltas({"model.norm.weight": torch.ones(48)}).save_pretrained(wrong)
    with pytest.raises(AdapterCompatibilityError, match="another shape"):  # a GRADIEND adapter for another size
        run_compare(CompareArguments(model=str(tiny / "tiny"), feature=str(tiny / "gender.jsonl"),
                                     out=str(tmp_path / "mismatch"), methods=["gradiend"], gradiend_adapter=str(wrong),
                                     quick=True, progress=False))
    assert not (tmp_path / "mismatch").exists()


def test_proportional_ranks_sort_worst_to_best_and_share_ties():
    assert proportional_ranks({"a": 10.0, "b": 2.0, "c": 5.0}) == {"a": 0.0, "c": 0.5, "b": 1.0}
    assert proportional_ranks({"a": 3.0, "b": 3.0, "c": 1.0, "d": 9.0}) == {"d": 0.0, "a": 0.5, "b": 0.5, "c": 1.0}
    rows = [ComparisonRow(n, n, {"ss": Score(ss), "seat": Score(seat) if seat else None, "crows": Score(50.0)})
            for n, ss, seat in (("base", 70.0, 0.8), ("inlp", 55.0, 0.3), ("self_debias", 52.0, None))]
    ranked = rank_rows(rows)
    assert [r.name for r in ranked] == ["self_debias", "inlp", "base"]
    assert ranked[0].mean_rank == 1.0 and ranked[1].mean_rank == 0.75 and ranked[2].mean_rank == 0.0
