"""`gradiend evaluate` and `gradiend encode`, end to end on a tiny Llama with a GRADIEND trained by `gradiend train`."""

import json
import shutil

import pytest
from tiny_models import bpe_tokenizer, tiny_gender_feature, tiny_llama

from gradiend_hf import GradiendModel
from gradiend_hf.cli import main


def _error_line(stderr: str) -> str:
    """The one `error:` line of a failed command (progress bars of model loading may precede it)."""
    lines = [line for line in stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(GRADIEND folder, feature file, base folder): trained once for the module by the `train` command."""
    root = tmp_path_factory.mktemp("cli-evaluate")
    tokenizer = bpe_tokenizer()
    base_folder = root / "tiny-llama"
    tiny_llama(len(tokenizer)).save_pretrained(base_folder)
    tokenizer.save_pretrained(base_folder)
    feature_file = root / "gender.jsonl"
    tiny_gender_feature().save_jsonl(feature_file)
    out = root / "run"
    code = main(["train", "--model", str(base_folder), "--feature", str(feature_file), "--out", str(out),
                 "--params", "model.layers.*.mlp.*", "--steps", "6", "--eval-steps", "3", "--batch-size", "4",
                 "--lr", "1e-3", "--quiet"])
    assert code == 0
    return out, feature_file, base_folder


def test_evaluate_writes_report_and_plot(trained, capsys):
    out, feature_file, _ = trained
    capsys.readouterr()
    assert main(["evaluate", str(out), "--feature", str(feature_file), "--max-per-group", "6", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Pearson r, all groups" in printed and "non_feature_slot" in printed and "Wrote" in printed
    folder = out / "evaluation"  # the default for a model folder
    assert {p.name for p in folder.iterdir()} == {"encoder_report.json", "encoder_h_distribution.png"}
    report = json.loads((folder / "encoder_report.json").read_text())
    assert list(report["groups"]) == ["female", "male", "neutral", "non_feature_slot"]
    assert report["info"]["base_model"] == str(trained[2]) and report["split"] == "test"
    assert len(report["groups"]["female"]["h"]) == sum(e.label == "female" for e in tiny_gender_feature().test)
    assert len(report["groups"]["neutral"]["h"]) == 6
    assert (folder / "encoder_h_distribution.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_rebuilds_a_builtin_feature_by_name(trained, tmp_path):
    out, _, base_folder = trained  # trained on a file named gender.jsonl: the config's feature is "gender"
    assert main(["evaluate", str(out), "--model", str(base_folder), "--max-per-group", "4", "--out",
                 str(tmp_path / "ev"), "--quiet"]) == 0
    report = json.loads((tmp_path / "ev" / "encoder_report.json").read_text())
    assert report["feature"] == "gender"
    builtin_texts = {e["text"] for e in report["groups"]["female"]["examples"]}
    assert not builtin_texts & {e.text for e in tiny_gender_feature().test}  # the built-in data, not the file
    assert all(len(g["h"]) <= 4 for g in report["groups"].values())


def test_evaluate_asks_for_a_feature_file_it_cannot_rebuild(trained, tmp_path, capsys):
    out, _, _ = trained
    model = GradiendModel.from_pretrained(out)
    model.config.feature_name = "toy"
    model.save_pretrained(tmp_path / "toy")
    assert main(["evaluate", str(tmp_path / "toy"), "--quiet"]) == 2
    err = _error_line(capsys.readouterr().err)
    assert "not a built-in one" in err and "--feature FILE" in err


def test_evaluate_names_a_missing_base_model(trained, tmp_path, capsys):
    out, feature_file, _ = trained
    assert main(["evaluate", str(out), "--model", str(tmp_path / "nowhere"), "--feature", str(feature_file)]) == 2
    err = _error_line(capsys.readouterr().err)
    assert "error: Could not load the base model" in err and "--model" in err


def test_encode_prints_h_per_text(trained, capsys):
    out, _, _ = trained
    texts = ["Mary said that [MASK] would come home.", "John explained the vision as best [MASK] could."]
    capsys.readouterr()
    assert main(["encode", str(out), *texts]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.rstrip().endswith(tuple(texts))]
    assert len(rows) == 2
    for row in rows:
        h = float(row.split()[0])
        assert -1.0 <= h <= 1.0 and "most likely" in row and ("'she'" in row or "'he'" in row)
    assert any("feature word the base model finds most likely" in line for line in lines)

    assert main(["encode", str(out), texts[0], "--target", "she"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.rstrip().endswith(texts[0]))
    assert "'she'" in row and "given" in row and "'he'" in row  # counterfactual: the other class's word


def test_encode_bad_input_is_one_clear_line(trained, capsys):
    out, _, _ = trained
    assert main(["encode", str(out), "Mary said that she would come."]) == 2
    assert capsys.readouterr().err.startswith("error: Text 1 must contain the slot [MASK] exactly once")
    assert main(["encode", str(out), "Mary said that [MASK] would come.", "--target", "xylophonist"]) == 2
    assert "not exactly one token" in _error_line(capsys.readouterr().err)


def test_help_shows_an_example(capsys):
    for command in ("evaluate", "encode"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert f"example:\n  gradiend {command} " in capsys.readouterr().out


def test_evaluate_on_a_copy_without_weights(trained, tmp_path, capsys):
    out, feature_file, _ = trained
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "model.safetensors").unlink()
    assert main(["evaluate", str(broken), "--feature", str(feature_file)]) == 2
    assert "no weights" in _error_line(capsys.readouterr().err)
