"""`gradiend` subcommands about adapters and results: push, export, apply, merge, bench, the demo and the comparison."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .cli_support import arg, check_output, load_base, parse_grid, parse_h, parse_rank, report_names

@dataclass
class Push:
    """Upload a saved GRADIEND model, delta adapter or PEFT export folder to the Hub (with its model card)."""

    path: str = arg("folder written by `gradiend train`, `gradiend export` or `gradiend merge`", positional=True)
    repo_id: str = arg("target repository, e.g. me/gemma-gradiend-gender", positional=True)
    private: bool = arg("create the repository as private", False)

    def run(self) -> int:
        from .adapters import ADAPTER_CONFIG_NAME, ADAPTER_TYPE, DeltaAdapter

        adapter_config = Path(self.path) / ADAPTER_CONFIG_NAME
        if adapter_config.is_file():
            kind = json.loads(adapter_config.read_text()).get("adapter_type")
            if kind == ADAPTER_TYPE:
                info = DeltaAdapter.from_pretrained(self.path).push_to_hub(self.repo_id, private=self.private or None)
            else:  # a PEFT export: upload it as it is (its README is PEFT-style already)
                from huggingface_hub import HfApi

                api = HfApi()
                api.create_repo(self.repo_id, private=self.private or None, exist_ok=True)
                info = api.upload_folder(repo_id=self.repo_id, folder_path=self.path,
                                         commit_message="Upload PEFT export of a GRADIEND delta adapter")
        else:
            from .modeling_gradiend import GradiendModel

            info = GradiendModel.from_pretrained(self.path).push_to_hub(self.repo_id, private=self.private or None)
        print(f"Pushed {self.path} to {self.repo_id}: {getattr(info, 'commit_url', info)}")
        return 0


@dataclass
class Export:
    """Turn a GRADIEND model's decoded update α·dec(h) into a delta adapter (and optionally a PEFT LoRA / SHiRA)."""

    path_or_repo: str = arg("GRADIEND model folder or Hub repo id", positional=True)
    h: str = arg("feature value to decode (the sign picks the class; e.g. the best point of `gradiend search`)")
    alpha: float = arg("strength α of the update")
    out: str = arg("folder for the delta adapter")
    dial: bool = arg("keep the decoder's direction and offset: h and α stay knobs when applying", False)
    lora: str | None = arg("also write a stock PEFT LoRA to OUT-lora: 'exact', a rank (e.g. 16) or an energy "
                           "fraction (e.g. 0.99)", None)
    pure: bool = arg("LoRA / SHiRA with factors only (no biases, no modules_to_save), for serving engines", False)
    shira: int | None = arg("also write a PEFT SHiRA adapter with r·(m+n) entries per matrix to OUT-shira", None)
    model: str | None = arg("base model (embedded name, Hub id or folder); default: the one in the config", None)
    no_base: bool = arg("do not load the base model (no compatibility check; PEFT exports then need module "
                        "types recorded at training time)", False)
    overwrite: bool = arg("replace existing output folders", False)

    def run(self) -> int:
        from .modeling_gradiend import GradiendModel

        h = parse_h(self.h)
        rank = parse_rank(self.lora) if self.lora is not None else None
        outputs = [check_output(self.out, self.overwrite)]
        if rank is not None:
            outputs.append(check_output(self.out.rstrip("/") + "-lora", self.overwrite))
        if self.shira is not None:
            outputs.append(check_output(self.out.rstrip("/") + "-shira", self.overwrite))
        model = GradiendModel.from_pretrained(self.path_or_repo)
        base = tokenizer = None
        if not self.no_base:
            base, tokenizer = load_base(self.model, model.config.base_model_name_or_path, self.path_or_repo)
        adapter = model.to_adapter(h=h, alpha=self.alpha, dial=self.dial, base_model=base)
        adapter.save_pretrained(outputs[0])
        print(f"Wrote the delta adapter to {outputs[0]}: {adapter}")
        if rank is not None:
            report = adapter.export_lora(outputs[1], rank=rank, pure=self.pure, base_model=base, tokenizer=tokenizer,
                                         overwrite=self.overwrite)
            print(report.summary())
        if self.shira is not None:
            report = adapter.export_shira(outputs[-1], r=self.shira, pure=self.pure, base_model=base,
                                          tokenizer=tokenizer, overwrite=self.overwrite)
            print(report.summary())
        return 0


@dataclass
class Apply:
    """Merge a delta adapter into its base model and save a plain transformers model folder (no gradiend_hf needed)."""

    adapter: str = arg("delta adapter folder or Hub repo id", positional=True)
    out: str = arg("folder for the merged model")
    model: str | None = arg("base model (embedded name, Hub id or folder); default: the one the adapter records",
                            None)
    scale: float = arg("multiply the update by this", 1.0)
    h: str | None = arg("feature value (dial adapters only; default: the adapter's own)", None)
    alpha: float | None = arg("strength (dial adapters only; default: the adapter's own)", None)
    overwrite: bool = arg("replace an existing output folder", False)

    def run(self) -> int:
        from .adapters import DeltaAdapter

        out = check_output(self.out, self.overwrite)
        adapter = DeltaAdapter.from_pretrained(self.adapter)
        base, tokenizer = load_base(self.model, adapter.config.base_model_name_or_path, self.adapter)
        adapter.merge_and_save(base, out, tokenizer=tokenizer, scale=self.scale, h=parse_h(self.h),
                               alpha=self.alpha, overwrite=self.overwrite)
        print(f"Wrote {out}: the base model with {self.adapter} merged (scale {self.scale}). Load it with "
              f"AutoModelForCausalLM.from_pretrained({str(out)!r}) (or AutoModelForMaskedLM).")
        return 0


@dataclass
class Merge:
    """Combine delta adapters (e.g. gender and race) into one, by weighted sum, TIES or DARE (PEFT's merge maths)."""

    adapters: list[str] = field(metadata={"help": "delta adapter folders or Hub repo ids", "positional": True,
                                          "nargs": "+"})
    out: str = arg("folder for the merged adapter")
    weights: list[str] = arg("one weight per adapter (default: all 1)", [], nargs="+")
    method: str = arg("sum | ties | dare (= dare_linear) | dare_ties | magnitude_prune", "sum")
    density: float = arg("share of entries TIES / DARE / magnitude pruning keep", 0.5)
    seed: int = arg("seed of DARE's random drops", 0)
    overwrite: bool = arg("replace an existing output folder", False)

    def run(self) -> int:
        from .adapters import DeltaAdapter, merge_adapters
        from .errors import AdapterCompatibilityError

        out = check_output(self.out, self.overwrite)
        try:
            weights = [float(w) for w in self.weights] if self.weights else None
        except ValueError:
            raise AdapterCompatibilityError(f"--weights must be numbers, got {self.weights}.") from None
        adapters = [DeltaAdapter.from_pretrained(a) for a in self.adapters]
        merged = merge_adapters(adapters, weights, method=self.method, density=self.density, seed=self.seed)
        merged.save_pretrained(out)
        print(f"Wrote {out}: {merged}")
        return 0


@dataclass
class Bench:
    """Run the bias benchmarks (StereoSet, CrowS-Pairs, SEAT, LM score) on a base model, alone and with adapters."""

    model: str = arg("base model: embedded name (see `gradiend models`), Hub id or folder", "gemma-3-270m")
    adapter: list[str] = arg("delta adapter folders or Hub ids, each benchmarked applied to the base (one at a time)",
                             [], nargs="+")
    suite: str = arg("comma-separated suites: stereoset,crows,seat,lm_score", "stereoset,crows,seat,lm_score")
    bias_types: str | None = arg("comma-separated bias types: gender,race,religion,profession (default: all)", None)
    limit: int | None = arg("at most this many examples per bias type / SEAT set / LM texts, for quick runs", None)
    batch_size: int = arg("sequences per forward pass", 16)
    bootstrap: int = arg("bootstrap resamples for the 95 % intervals (0: none)", 1000)
    seed: int = arg("seed of bootstraps and sampled p-values", 0)
    out: str = arg("output folder for JSON results, the Markdown table and the plot", "runs/bench")
    overwrite: bool = arg("replace an existing output folder", False)
    quiet: bool = arg("no progress bars", False)

    def run(self) -> int:
        from .adapters import DeltaAdapter
        from .benchmarks import compare_reports, paired_differences, plot_reports, run_benchmarks

        out = check_output(self.out, self.overwrite, remove=True)
        names = report_names(self.adapter)
        adapters = {name: DeltaAdapter.from_pretrained(a) for name, a in zip(names, self.adapter)}  # fail early
        base, tokenizer = load_base(self.model, None, "the command line")
        options = {"suites": [s.strip() for s in self.suite.split(",") if s.strip()], "limit": self.limit,
                   "bias_types": [b.strip() for b in self.bias_types.split(",")] if self.bias_types else None,
                   "batch_size": self.batch_size, "bootstrap": self.bootstrap, "seed": self.seed,
                   "progress": not self.quiet}
        reports = {"base": run_benchmarks(base, tokenizer, **options)}
        for name, adapter in adapters.items():
            with adapter.applied(base):
                reports[name] = run_benchmarks(base, tokenizer, **options)
        out.mkdir(parents=True, exist_ok=True)
        for name, report in reports.items():
            report.save(out / f"{name}.json")
        table = compare_reports(reports)
        for name, report in list(reports.items())[1:]:
            paired = paired_differences(reports["base"], report, seed=self.seed)
            (out / f"{name}.paired.json").write_text(json.dumps([d.to_dict() for d in paired], indent=2) + "\n")
            table += (f"\n{name} − base, paired (the same examples resampled for both; 95 %):\n\n"
                      "| benchmark | bias type | metric | change | interval | moved |\n|---|---|---|---|---|---|\n")
            table += "".join(f"| {d.suite} | {d.group} | {d.metric} | {d.difference:+.4g} | "
                             f"{'–' if d.ci is None else f'[{d.ci[0]:+.3g}, {d.ci[1]:+.3g}]'} | "
                             f"{'yes' if d.moved else 'no'} |\n" for d in paired)
        (out / "benchmarks.md").write_text(table, encoding="utf-8")
        plot_reports(reports, out / "benchmarks.png", title=self.model)
        print(table)
        print(f"Wrote {out}/: one JSON (+ per-example scores) per model, paired changes per adapter, benchmarks.md, "
              "benchmarks.png")
        return 0


@dataclass
class Demo:
    """The main job: train a GRADIEND, evaluate, search, export the debiasing adapter, benchmark, and report."""

    model: str = arg("base model: embedded name (see `gradiend models`), Hub id or folder", "gemma-3-270m")
    feature: str = arg("gender | race[:a,b] | religion[:a,b] | a .csv/.jsonl file of slot examples", "gender")
    out: str = arg("output folder (a second run with the same arguments reuses finished steps)", "runs/demo")
    quick: bool = arg("a minutes-long version on fewer steps, texts and grid points", False)
    steps: int | None = arg("GRADIEND training steps (default 100; --quick 20)", None)
    params: list[str] = arg("base parameters: glob patterns or a preset (paper = all but the LM head; blocks); "
                            "default: the embedded model's recommendation", [], nargs="+")
    on: str = arg("what the decoder search scores: transfer | feature | auto (transfer when one exists)", "auto")
    transfer: str | None = arg("your own transfer texts (.csv/.jsonl with one [MASK] per text)", None)
    transfer_words: str | None = arg("JSON {class: [words]} for --transfer (default: built-in first names)", None)
    h: list[str] = arg("feature factors h* of the search grid (default: the paper's 15)", [], nargs="+")
    alpha: list[str] = arg("learning rates α of the search grid; ±x gives both signs (default: the paper's 16)",
                           [], nargs="+")
    strengths: list[str] = arg("also benchmark the chosen update scaled by these (e.g. 2 4)", [], nargs="+")
    bench_limit: int | None = arg("benchmark examples per bias type (default all; --quick 24)", None)
    seed: int = arg("seed of training, splits and samples", 0)
    overwrite: bool = arg("redo every step (empties --out first)", False)
    quiet: bool = arg("no progress bars", False)

    def run(self) -> int:
        from .demo import DemoArguments, run_demo

        h_values, alphas = parse_grid(self.h, "--h"), parse_grid(self.alpha, "--alpha")
        strengths = parse_grid(self.strengths, "--strengths") or []
        report = run_demo(DemoArguments(model=self.model, feature=self.feature, out=self.out, quick=self.quick,
                                        steps=self.steps, params=tuple(self.params) or None, on=self.on,
                                        transfer=self.transfer, transfer_words=self.transfer_words,
                                        h_values=tuple(h_values) if h_values else None,
                                        alphas=tuple(alphas) if alphas else None, strengths=tuple(strengths),
                                        bench_limit=self.bench_limit, seed=self.seed, overwrite=self.overwrite,
                                        progress=not self.quiet))
        print(f"Report: {report}")
        return 0


__all__ = ["Apply", "Bench", "Demo", "Export", "Merge", "Push"]


@dataclass
class Compare:
    """The paper's comparison: GRADIEND, CDA, Dropout, INLP, SentenceDebias, SelfDebias, LEACE, RLACE and combinations,
    ranked by mean proportional rank over SS and SEAT (table, JSON and plot)."""

    model: str = arg("base model: embedded name (see `gradiend models`), Hub id or folder", "gemma-3-270m")
    feature: str = arg("gender | race[:a,b] | religion[:a,b] | a .csv/.jsonl file of slot examples", "gender")
    out: str = arg("output folder (a second run with the same settings reuses finished variants)", "runs/compare")
    methods: list[str] = arg("variants to compare (default all): gradiend cda dropout inlp sentence_debias "
                             "self_debias leace rlace gradiend+inlp gradiend+sentence_debias cda+inlp "
                             "cda+sentence_debias dropout+inlp dropout+sentence_debias", [], nargs="+")
    gradiend_adapter: str | None = arg("a trained GRADIEND delta adapter (e.g. a demo's adapter/); default: train "
                                       "one here", None)
    quick: bool = arg("a smoke run of minutes: fewer steps, pairs, benchmark items and resamples", False)
    bench_limit: int | None = arg("benchmark items per bias type (default all; --quick 24)", None)
    lm_texts: int | None = arg("texts of the LM score (default 200; --quick 24)", None)
    gradiend_steps: int | None = arg("GRADIEND training steps without --gradiend-adapter (default 100; --quick 10)",
                                     None)
    pretrain_steps: int | None = arg("CDA / Dropout further pre-training steps (default 200; --quick 6)", None)
    max_pairs: int | None = arg("counterfactual pairs the projections are fitted on (default 1000; --quick 128)",
                                None)
    glue: str | None = arg("folder of GLUE-format dev sets (SST-2/, CoLA/, RTE/) for zero-shot accuracy; given to a "
                           "finished comparison, only GLUE is measured", None)
    glue_limit: int | None = arg("examples per GLUE task (default 200; --quick 16)", None)
    bootstrap: int | None = arg("bootstrap resamples of the intervals (default 1000; --quick 200)", None)
    seed: int = arg("seed of training, samples and bootstraps", 0)
    overwrite: bool = arg("redo everything (empties --out first)", False)
    quiet: bool = arg("no progress bars", False)

    def run(self) -> int:
        from .compare import CompareArguments, run_compare

        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "quiet"}
        path = run_compare(CompareArguments(**{**options, "methods": self.methods or None},
                                            progress=not self.quiet))
        print(path.read_text(encoding="utf-8"))
        print(f"Wrote {path}, comparison.json and comparison.png in {path.parent}/")
        return 0
