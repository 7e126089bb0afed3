"""Zero-shot GLUE: both RTE layouts, CoLA without a header, accuracy against a hand count, masked LMs."""

import numpy as np
import pytest
import torch

from gradiend_hf.benchmarks.glue import GLUE_TASKS, glue_zero_shot, load_glue
from gradiend_hf.errors import BenchmarkError


@pytest.fixture
def glue(tmp_path):
    for folder in ("SST-2", "CoLA", "RTE"):
        (tmp_path / folder).mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\n" + "".join(
        f"a {'fine' if i % 2 else 'dull'} film {i} .\t{i % 2}\n" for i in range(10)))
    (tmp_path / "CoLA" / "dev.tsv").write_text("".join(f"src\t{i % 2}\t{'' if i % 2 else '*'}\tThe cat sat {i}.\n"
                                                       for i in range(6)))
    (tmp_path / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tMary came.\tMary came.\t"
                                              "entailment\n1\tJohn ran.\tMary ran.\tnot_entailment\n")
    return tmp_path


def test_layouts_are_read_and_limits_spread(glue, tmp_path):
    assert load_glue(glue, "cola")[0] == (("The cat sat 0.",), 0)
    assert load_glue(glue, "rte") == [(("Mary came.", "Mary came."), 0), (("John ran.", "Mary ran."), 1)]
    (glue / "RTE" / "dev.tsv").write_text("sentence1\tsentence2\tlabel\tidx\nA.\tB.\t1\t0\n")
    assert load_glue(glue, "rte") == [(("A.", "B."), 1)]
    assert [label for _, label in load_glue(glue, "sst2", limit=5)] == [0, 0, 0, 0, 0]  # rows 0, 2, 4, 6, 8
    with pytest.raises(BenchmarkError, match="SST-2/dev.tsv"):
        load_glue(tmp_path / "nowhere", "sst2")


def test_accuracy_is_the_share_of_label_words_preferred(llama, bpe, glue):
    scores, skipped = glue_zero_shot(llama, bpe, glue, tasks=["sst2"], bootstrap=0)
    examples = load_glue(glue, "sst2")
    words = [bpe(w, add_special_tokens=False)["input_ids"] for w in GLUE_TASKS["sst2"].words]
    hits = []
    for fields, label in examples:
        context = bpe(GLUE_TASKS["sst2"].prompt(fields))["input_ids"]
        totals = []
        for word in words:
            ids = torch.tensor([context + word])
            with torch.no_grad():
                log_probs = llama(ids).logits[0, :-1].log_softmax(-1)
            positions = torch.arange(len(context) - 1, ids.shape[1] - 1)
            totals.append(float(log_probs[positions, ids[0, len(context):]].sum()))
        hits.append(int(np.argmax(totals)) == label)
    assert skipped == {} and scores["sst2"].value == pytest.approx(100 * np.mean(hits)) and scores["sst2"].count == 10


def test_masked_lms_need_single_token_label_words(bert, wordpiece, glue):
    scores, skipped = glue_zero_shot(bert, wordpiece, glue, bootstrap=20)
    assert set(scores) | set(skipped) == {"sst2", "cola", "rte"}
    assert all("single tokens" in reason for reason in skipped.values())
    assert all(0 <= s.value <= 100 for s in scores.values())
