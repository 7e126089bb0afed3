"""`gradiend compare` / `gh.compare`: the GRADIEND paper's comparison of debiasing methods on your own model.

Every variant is a stack of adapters on one base model: a weight change (GRADIEND, CDA, Dropout: delta adapters), a
post-processing (INLP, SentenceDebias, LEACE, RLACE: representation adapters; SelfDebias: an output adapter), or a
weight change with a projection refitted on the changed model (GRADIEND + INLP, …). Each is benchmarked (StereoSet,
CrowS-Pairs, SEAT, LM score, with bootstrap intervals; optionally zero-shot GLUE) and the table ranks them by mean
proportional rank over SS and SEAT (`compare_report`). Every finished variant is recorded in `compare_state.json`
and reused by a second run with the same settings, so an interrupted comparison continues where it stopped, and
more methods, or GLUE columns, can be added later. Inputs are checked before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .atomic_io import atomic_write_json
from .errors import FeatureDataError, OutputExistsError, SearchError, TargetTokenizationError
from .zoo import DEFAULT_MODEL

STATE_NAME = "compare_state.json"
TABLE_NAME = "comparison.md"
WEIGHT_METHODS = ("gradiend", "cda", "dropout")
POST_METHODS = ("inlp", "sentence_debias", "self_debias", "leace", "rlace")
COMBINED = tuple(f"{w}+{p}" for w in WEIGHT_METHODS for p in ("inlp", "sentence_debias"))
METHODS = (*WEIGHT_METHODS, *POST_METHODS, *COMBINED)
"""Every variant of the paper's table except the base model, which is always compared."""

LABELS = {"base": "base model", "gradiend": "GRADIEND", "cda": "CDA", "dropout": "Dropout", "inlp": "INLP",
          "sentence_debias": "SentenceDebias", "self_debias": "SelfDebias", "leace": "LEACE", "rlace": "RLACE"}
SELF_DEBIAS_NO_SEAT = ("not applicable: SelfDebias rescales the output distribution and leaves hidden states "
                       "unchanged, so SEAT's sentence embeddings cannot measure it (as in the paper)")
_BIAS_TYPES = ("gender", "race", "religion")
GLUE_SETTINGS = ("glue", "glue_limit")
"""Settings that may change between runs of one comparison: GLUE is measured per variant, beside its benchmarks."""
GLUE_NAME = "glue.json"


def label(variant: str) -> str:
    """The paper's name of a variant ("gradiend+inlp" -> "GRADIEND + INLP")."""
    return " + ".join(LABELS[part] for part in variant.split("+"))


@dataclass
class CompareArguments:
    """What the comparison runs on (defaults: the full run; `quick` for a smoke run of minutes).

    Args:
        model: embedded model name, Hub id or local folder.
        feature: gender, race[:a,b], religion[:a,b] or a .csv/.jsonl file of slot examples.
        out: output folder (a second run with the same settings reuses finished variants; GLUE settings may differ).
        methods: variants to compare (default all of `METHODS`); the base model is always included.
        gradiend_adapter: a trained GRADIEND delta adapter (folder or Hub id, e.g. a demo's `adapter/`); without
            it, a GRADIEND is trained, searched and exported here.
        quick: fewer steps, pairs, benchmark items and resamples.
        bench_limit: benchmark items per bias type (default all; quick 24).
        lm_texts: neutral texts for the LM score (default 200; quick 24).
        gradiend_steps: GRADIEND training steps when no adapter is given (default 100; quick 10).
        pretrain_steps: CDA / Dropout further pre-training steps (default 200; quick 6).
        max_pairs: counterfactual pairs the projections are fitted on (default 1000; quick 128).
        glue: a folder of GLUE-format dev sets for zero-shot accuracy (read, never copied); given to a finished
            comparison, only the GLUE scores are computed, with each variant's saved adapters.
        glue_limit: examples per GLUE task (default 200; quick 16).
        bootstrap: resamples of every interval (default 1000; quick 200).
        seed: seed of training, samples and bootstraps.
        overwrite: redo everything (the folder is emptied first).
        progress: progress bars.
    """

    model: str = DEFAULT_MODEL
    feature: str = "gender"
    out: str = "runs/compare"
    methods: list[str] | None = None
    gradiend_adapter: str | None = None
    quick: bool = False
    bench_limit: int | None = None
    lm_texts: int | None = None
    gradiend_steps: int | None = None
    pretrain_steps: int | None = None
    max_pairs: int | None = None
    glue: str | None = None
    glue_limit: int | None = None
    bootstrap: int | None = None
    seed: int = 0
    overwrite: bool = False
    progress: bool = True

    def _pick(self, value: Any, full: Any, quick: Any) -> Any:
        return value if value is not None else (quick if self.quick else full)

    def resolved(self) -> dict[str, Any]:
        """Every setting with the quick / full defaults filled in."""
        return {"model": self.model, "feature": self.feature, "gradiend_adapter": self.gradiend_adapter,
                "quick": self.quick, "bench_limit": self._pick(self.bench_limit, None, 24),
                "lm_texts": self._pick(self.lm_texts, 200, 24),
                "gradiend_steps": self._pick(self.gradiend_steps, 100, 10),
                "pretrain_steps": self._pick(self.pretrain_steps, 200, 6),
                "max_pairs": self._pick(self.max_pairs, 1000, 128), "glue": self.glue,
                "glue_limit": self._pick(self.glue_limit, 200, 16),
                "bootstrap": self._pick(self.bootstrap, 1000, 200), "seed": self.seed}

    def chosen_methods(self) -> list[str]:
        """The variants asked for, in the order of `METHODS`; an unknown name is one clear error."""
        from .errors import GradiendConfigError

        chosen = [m.strip().lower().replace("-", "_").replace(" ", "") for m in (self.methods or METHODS)]
        unknown = [m for m in chosen if m not in METHODS]
        if unknown or not chosen:
            raise GradiendConfigError(f"Unknown methods {unknown or chosen}; expected some of {list(METHODS)}.")
        return [m for m in METHODS if m in chosen]


def compare(model: str = DEFAULT_MODEL, feature: str = "gender", out: str = "runs/compare", **options: Any) -> Path:
    """Run (or continue) the comparison and return the path of `comparison.md` (see `CompareArguments`)."""
    return run_compare(CompareArguments(model=model, feature=feature, out=out, **options))


def run_compare(args: CompareArguments) -> Path:
    """Run (or continue) the comparison described by `args`; returns the path of `comparison.md`.

    Raises:
        OutputExistsError: `out` holds other files or a comparison with other settings (use `overwrite`).
        FeatureDataError / TargetTokenizationError / AdapterCompatibilityError: the data, a method or the GRADIEND
            adapter does not fit the model (checked before anything is written).
    """
    from . import features as feature_data
    from .zoo import load_base_model

    settings = args.resolved()
    methods = args.chosen_methods()
    feature = feature_data.load_feature(args.feature, seed=args.seed)
    base, tokenizer = load_base_model(args.model)
    run = _Comparison(args, settings, methods, feature, base, tokenizer)
    run.check_inputs()
    state = _open_state(Path(args.out), settings, overwrite=args.overwrite)
    run.state = state
    bar = tqdm(["base", *methods], desc="compare", disable=not args.progress, dynamic_ncols=True)
    for variant in bar:
        bar.set_postfix_str(variant)
        if state["variants"].get(variant, {}).get("done"):
            tqdm.write(f"[compare] {variant}: done in an earlier run, reused")
            if args.glue and not run.glue_is_current(variant):
                started = time.time()
                run.measure_glue(variant)
                state["variants"][variant]["glue_seconds"] = round(time.time() - started, 1)
                _save_state(Path(args.out), state)
                tqdm.write(f"[compare] {variant}: GLUE added in {state['variants'][variant]['glue_seconds']:.0f} s")
            continue
        started = time.time()
        run.benchmark(variant)
        state["variants"][variant] = {"done": True, "seconds": round(time.time() - started, 1)}
        _save_state(Path(args.out), state)
        tqdm.write(f"[compare] {variant}: {state['variants'][variant]['seconds']:.0f} s")
    bar.close()
    return run.write_table(methods)


def _open_state(out: Path, settings: dict[str, Any], *, overwrite: bool) -> dict[str, Any]:
    path = out / STATE_NAME
    if overwrite and out.exists():
        shutil.rmtree(out)
    if path.is_file():
        state = json.loads(path.read_text(encoding="utf-8"))
        if _identity(state.get("settings") or {}) != _identity(settings):
            raise OutputExistsError(
                f"`{out}` holds a comparison with other settings ({_identity(state.get('settings') or {})}); reuse "
                f"needs the same settings (methods and GLUE may differ). Choose another --out, or add --overwrite "
                f"to redo everything."
            )
        state["settings"] = settings
        return state
    if out.exists() and any(out.iterdir()):
        raise OutputExistsError(f"`{out}` is not empty and holds no comparison; choose another --out or add "
                                f"--overwrite.")
    state = {"settings": settings, "variants": {}, "weights": {}}
    _save_state(out, state)
    return state


def _identity(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that make two runs one comparison (all but GLUE's)."""
    return {key: value for key, value in settings.items() if key not in GLUE_SETTINGS}


def _save_state(out: Path, state: dict[str, Any]) -> None:
    atomic_write_json(out / STATE_NAME, state, sort_keys=True)


@dataclass
class _Comparison:
    args: CompareArguments
    settings: dict[str, Any]
    methods: list[str]
    feature: Any
    base: Any
    tokenizer: Any
    state: dict[str, Any] = dataclasses.field(default_factory=dict)
    _weights: dict[str, Any] = dataclasses.field(default_factory=dict)
    _data: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def out(self) -> Path:
        return Path(self.args.out)

    @property
    def bias_type(self) -> str | None:
        return self.feature.name if self.feature.name in _BIAS_TYPES else None

    def _parts(self, variant: str) -> tuple[str | None, str | None]:
        weights, _, post = variant.partition("+")
        if weights in POST_METHODS:
            return None, weights
        return (None if weights == "base" else weights), (post or None)

    # -- checks before anything is written ------------------------------------------------------------------------
    def check_inputs(self) -> None:
        """Fail early, with one line each: data too small or multi-token, no prompt format, a mismatched adapter."""
        from .debiasers import counterfactual_pairs, self_debias

        posts = {self._parts(m)[1] for m in self.methods} - {None}
        if posts - {"self_debias"}:
            counterfactual_pairs(self.feature, self.tokenizer, max_pairs=self.settings["max_pairs"])
        if "self_debias" in posts:
            self_debias(self.base, self.tokenizer, self.bias_type or "gender")
        if self.args.gradiend_adapter and any(self._parts(m)[0] == "gradiend" for m in self.methods):
            from .adapters import DeltaAdapter

            DeltaAdapter.from_pretrained(self.args.gradiend_adapter).check_base_model(self.base)
        if self.args.glue and not Path(self.args.glue).is_dir():
            from .errors import BenchmarkError

            raise BenchmarkError(f"--glue {self.args.glue!r} is not a folder; point to the folder that holds "
                                 f"SST-2/, CoLA/ and RTE/ with their dev.tsv.")

    # -- the adapters of a variant ---------------------------------------------------------------------------------
    def weights(self, method: str):
        """The delta adapter of a weight-changing method: given, cached, or trained now."""
        if method in self._weights:
            return self._weights[method]
        from .debiasers import PretrainingArguments, train_cda, train_dropout

        folder = self.out / "weights" / method
        if method == "gradiend":
            adapter = self._gradiend(folder)
        else:
            train = train_cda if method == "cda" else train_dropout
            adapter = train(self.base, self.tokenizer, self.feature, folder, PretrainingArguments(
                steps=self.settings["pretrain_steps"], seed=self.args.seed, progress=self.args.progress))
        self._weights[method] = adapter
        return adapter

    def _gradiend(self, folder: Path):
        from .adapters import DeltaAdapter

        if self.args.gradiend_adapter:
            return DeltaAdapter.from_pretrained(self.args.gradiend_adapter)
        if self.state["weights"].get("gradiend", {}).get("done"):
            return DeltaAdapter.from_pretrained(folder / "adapter")
        from .evaluation import search_decoder
        from .modeling_gradiend import GradiendModel
        from .training import GradiendTrainer, TrainingArguments
        from .zoo import EMBEDDED_MODELS

        embedded = EMBEDDED_MODELS.get(self.args.model)
        model = GradiendModel.for_base_model(self.base, params=embedded.recommended_params if embedded else None,
                                             feature=self.feature)
        training = TrainingArguments(output_dir=str(folder / "model"), max_steps=self.settings["gradiend_steps"],
                                     eval_steps=max(1, self.settings["gradiend_steps"] // 4), eval_max_examples=64,
                                     seed=self.args.seed, overwrite_output_dir=True, progress_bar=self.args.progress)
        GradiendTrainer(model, self.base, self.tokenizer, self.feature, training).train()
        grid = {"h_values": [-1.0, -0.5, 0.0, 0.5, 1.0], "alphas": [-0.05, -0.01, -1e-3, 1e-3, 0.01, 0.05]} \
            if self.args.quick else {}
        options = {"split": "validation", "progress": self.args.progress, "seed": self.args.seed, **grid}
        try:  # the transfer task where the built-in words fit this tokenizer, as the demo's "auto"
            result = search_decoder(model, self.base, self.tokenizer, self.feature, on="transfer", **options)
        except (FeatureDataError, TargetTokenizationError):
            result = search_decoder(model, self.base, self.tokenizer, self.feature, on="feature", **options)
        best = result.best("balanced")
        if best.is_base:  # no edit beat the base: the fallback (LM kept), else the most balanced edit, and say so
            fallback = result.fallback("balanced")
            candidates = [fallback] if fallback is not None else \
                [p for p in result.points if p.indices and not p.is_base]
            if not candidates:
                raise SearchError("The GRADIEND decoder search scored no edit; pass --gradiend-adapter instead.")
            best = max(candidates, key=lambda p: p.indices["balanced"])
        adapter = model.to_adapter(h=best.h, alpha=best.alpha, base_model=self.base, description=(
            f"GRADIEND for {self.feature.name}: h = {best.h}, α = {best.alpha}, the best point ({result.on} texts) "
            f"of the decoder search ({self.settings['gradiend_steps']} training steps)."))
        adapter.save_pretrained(folder / "adapter")
        self.state["weights"]["gradiend"] = {"done": True, "h": best.h, "alpha": best.alpha}
        _save_state(self.out, self.state)
        return adapter

    def post(self, method: str, variant: str, weights: str | None):
        """The post-processing adapter of a variant, fitted on the model as it is now (weights applied)."""
        from .adapters import load_adapter
        from .debiasers import fit_data, fit_inlp, fit_leace, fit_rlace, fit_sentence_debias, self_debias

        folder = self.out / "variants" / variant / "adapter"
        if folder.is_dir():
            return load_adapter(folder)
        if method == "self_debias":
            adapter = self_debias(self.base, self.tokenizer, self.bias_type or "gender")
        else:
            key = weights or "base"
            if key not in self._data:
                pairs = self.settings["max_pairs"]
                self._data[key] = fit_data(self.base, self.tokenizer, self.feature, max_pairs=pairs,
                                           neutral=min(pairs, 500), seed=self.args.seed, progress=self.args.progress)
            fit = {"inlp": fit_inlp, "sentence_debias": fit_sentence_debias, "leace": fit_leace,
                   "rlace": fit_rlace}[method]
            options = {"iterations": 200} if method == "rlace" and self.args.quick else {}
            adapter = fit(self.base, self.tokenizer, self.feature, data=self._data[key], progress=self.args.progress,
                          **options)
        adapter.save_pretrained(folder)
        return adapter

    # -- benchmarks ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def applied(self, variant: str):
        """The base model with the variant's adapters on (weights first, then the post-processing fitted on them)."""
        weights, post = self._parts(variant)
        with contextlib.ExitStack() as stack:
            if weights:
                stack.enter_context(self.weights(weights).applied(self.base))
            if post:
                stack.enter_context(self.post(post, variant, weights).applied(self.base))
            yield

    def benchmark(self, variant: str) -> None:
        """Apply the variant's adapters, run the benchmarks (and GLUE), save `variants/<variant>/report.json`."""
        from .benchmarks import default_lm_texts, run_benchmarks
        from .benchmarks.suite import SUITES

        post = self._parts(variant)[1]
        folder = self.out / "variants" / variant
        with self.applied(variant):
            suites = [s for s in SUITES if not (post == "self_debias" and s == "seat")]
            report = run_benchmarks(self.base, self.tokenizer, suites=suites,
                                    bias_types=[self.bias_type] if self.bias_type else None,
                                    limit=self.settings["bench_limit"], bootstrap=self.settings["bootstrap"],
                                    seed=self.args.seed, progress=self.args.progress,
                                    lm_texts=default_lm_texts(self.settings["lm_texts"]))
            if post == "self_debias":
                report.skipped["seat"] = SELF_DEBIAS_NO_SEAT
            glue = self._glue_scores() if self.args.glue else None
        report.settings["variant"] = variant
        report.save(folder / "report.json")
        if glue is not None:
            self._write_glue(variant, glue)

    def glue_is_current(self, variant: str) -> bool:
        """Whether the variant's saved GLUE scores were measured with this run's example limit."""
        path = self.out / "variants" / variant / GLUE_NAME
        if not path.is_file():
            return False
        return json.loads(path.read_text(encoding="utf-8")).get("limit") == self.settings["glue_limit"]

    def measure_glue(self, variant: str) -> None:
        """GLUE alone for a finished variant, with its saved adapters (nothing is trained or fitted again)."""
        with self.applied(variant):
            glue = self._glue_scores()
        self._write_glue(variant, glue)

    def _glue_scores(self) -> dict[str, Any]:
        from .benchmarks.glue import glue_zero_shot

        scores, skipped = glue_zero_shot(self.base, self.tokenizer, self.args.glue, limit=self.settings["glue_limit"],
                                         bootstrap=self.settings["bootstrap"], seed=self.args.seed,
                                         progress=self.args.progress)
        return {"limit": self.settings["glue_limit"], "scores": {t: s.to_dict() for t, s in scores.items()},
                "skipped": skipped}

    def _write_glue(self, variant: str, glue: dict[str, Any]) -> None:
        atomic_write_json(self.out / "variants" / variant / GLUE_NAME, glue, sort_keys=True)

    # -- the table ------------------------------------------------------------------------------------------------
    def write_table(self, methods: list[str]) -> Path:
        """Rank the variants asked for (and the base) and write comparison.md, comparison.json and comparison.png."""
        from .benchmarks import BenchmarkReport, Score
        from .compare_report import comparison_markdown, plot_comparison, rank_rows, row_for

        rows, glue_limits = [], set()
        for variant in ["base", *methods]:
            folder = self.out / "variants" / variant
            glue_path = folder / GLUE_NAME
            glue = json.loads(glue_path.read_text(encoding="utf-8")) if glue_path.is_file() else {}
            if glue:
                glue_limits.add(glue.get("limit"))
            row = row_for(variant, label(variant), BenchmarkReport.load(folder / "report.json"),
                          bias_type=self.bias_type,
                          glue={t: Score.from_dict(s) for t, s in glue.get("scores", {}).items()})
            row.notes += [f"GLUE {task} skipped: {reason}" for task, reason in glue.get("skipped", {}).items()]
            rows.append(row)
        rows = rank_rows(rows)
        table = comparison_markdown(rows)
        data = {"settings": self.settings, "rows": [row.to_dict() for row in rows]}
        (self.out / "comparison.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        plot_comparison(rows, self.out / "comparison.png", title=f"{self.args.model}: {self.feature.name}")
        path = self.out / TABLE_NAME
        path.write_text(self._header(glue_limits) + table + "\n![comparison](comparison.png)\n", encoding="utf-8")
        return path

    def _header(self, glue_limits: set[int | None]) -> str:
        """The table's preamble; GLUE's example limit is the one its saved scores record, not this run's setting."""
        s = self.settings
        seconds = sum(v.get("seconds", 0) for v in self.state.get("variants", {}).values())
        source = (f"the given adapter `{s['gradiend_adapter']}`" if s["gradiend_adapter"] else
                  f"trained here ({s['gradiend_steps']} steps), the most balanced point of its decoder search")
        ranking = (f"Variants ranked by mean proportional rank over StereoSet SS and SEAT (each metric: every variant, "
                   f"the base included, sorted worst → best, rank i/(n−1); CrowS-Pairs ranked beside, outside the "
                   f"mean). Intervals are 95 % bootstrap intervals ({s['bootstrap']} resamples); benchmark limit "
                   f"{s['bench_limit']}, {s['lm_texts']} LM-score texts; {seconds / 60:.1f} min in all (training, "
                   f"fitting and benchmarking).")
        added = sum(v.get("glue_seconds", 0) for v in self.state.get("variants", {}).values())
        if glue_limits:
            known = sorted(limit for limit in glue_limits if limit is not None)
            ranking += (" Zero-shot GLUE" + (f": ≤ {known[-1]} dev examples per task" if known else "") +
                        (f", added to the finished variants later ({added / 60:.1f} min)." if added else "."))
        times = ", ".join(f"{label(name)} {v['seconds']:.0f} s" for name, v in self.state.get("variants", {}).items())
        weights = (f"- CDA / Dropout: {s['pretrain_steps']} steps of further pre-training of every transformer-block "
                   f"parameter (8 texts a step) on the feature's training texts and 1,000 neutral WikiText sentences; "
                   f"CDA adds their two-sided counterfactual swaps, Dropout raises dropout to 0.2 / 0.15.")
        projections = (f"- INLP, SentenceDebias, LEACE, RLACE: fitted on ≤ {s['max_pairs']} counterfactual pairs of "
                       f"the feature's training texts (never benchmark data; RLACE at most "
                       f"{200 if s['quick'] else 600} game steps); in a combination, refitted on the weight-changed "
                       f"model.")
        return "\n".join([f"# Debiasing comparison: {self.feature.name} on {s['model']}", "", ranking, "",
                          f"- GRADIEND: {source}.", weights, projections,
                          "- SelfDebias: the bias type's debiasing prefix; no SEAT score (it changes no hidden state).",
                          f"- Seconds per variant (a weight change is trained where first needed): {times}.", "", ""])


__all__ = ["COMBINED", "METHODS", "CompareArguments", "compare", "label", "run_compare"]
