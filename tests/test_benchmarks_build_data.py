"""Tests for the shipped benchmark data and gradiend_hf.benchmarks.build_data (a byte-identical rebuild)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from gradiend_hf.benchmarks import build_data

DATA = resources.files("gradiend_hf.benchmarks.data")
SHARED = Path(__file__).parents[2] / "shared" / "data"
SHIPPED = ("ATTRIBUTION.md", "LICENSE-CC-BY-NC-4.0.txt", "LICENSE-CC-BY-SA-4.0.md", "crows_pairs.jsonl",
           "lm_texts.txt", "stereoset_intrasentence.jsonl")  # fmt: skip


def _shipped_files() -> dict[str, bytes]:
    files = {name: DATA.joinpath(name).read_bytes() for name in SHIPPED}
    for path in DATA.joinpath("seat").iterdir():
        files[f"seat/{path.name}"] = path.read_bytes()
    return files


def test_shipped_files_are_compact_and_licensed() -> None:
    names = {p.name for p in DATA.iterdir()}
    assert set(SHIPPED) <= names
    files = _shipped_files()
    assert not any("bias_attribute" in n or "religion" in n for n in files)
    assert sum(len(content) for content in files.values()) < 2_000_000
    attribution = DATA.joinpath("ATTRIBUTION.md").read_text(encoding="utf-8")
    for needle in ("CC BY-SA 4.0", "CC BY-NC 4.0", "NON-COMMERCIAL", "CC BY-SA 3.0", "no licensed religion",
                   "8aaac11c485473159ec9328a65253a5be9a479dc", "e3559fb669ca4832743b42fee715994c15c7f1af"):  # fmt: skip
        assert needle in attribution
    assert b"Attribution-NonCommercial 4.0" in files["LICENSE-CC-BY-NC-4.0.txt"]


def test_stereoset_word_alignment() -> None:
    assert build_data.stereoset_word("The BLANK Russian sat.", "The drunk russian sat.") == "drunk"
    assert build_data.stereoset_word("is BLANK and about BLANK", "Is odd and about odd") == "odd"
    with pytest.raises(ValueError, match="does not fill the BLANK"):
        build_data.stereoset_word("The BLANK sat.", "A cat sat.")


@pytest.mark.skipif(
    not (SHARED / "bias" / "stereoset").exists(), reason="the data pack is not on this machine"
)
def test_build_is_byte_identical(tmp_path) -> None:
    report = build_data.build(SHARED, tmp_path)
    assert report.lm_texts == 500 and sum(report.crows.values()) == 883 and len(report.seat) == 38
    rebuilt = {name: (tmp_path / name).read_bytes() for name in SHIPPED}
    rebuilt.update({f"seat/{p.name}": p.read_bytes() for p in (tmp_path / "seat").iterdir()})
    shipped = _shipped_files()
    assert rebuilt.keys() == shipped.keys()
    for name, content in shipped.items():
        assert rebuilt[name] == content, name
