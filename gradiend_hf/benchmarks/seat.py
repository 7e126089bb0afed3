"""SEAT (May et al. 2019): Caliskan's WEAT effect size on mean-pooled sentence embeddings, with p-values."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from gradiend_hf.benchmarks._data import check_bias_types, data_file, evenly_spaced, require_fields
from gradiend_hf.benchmarks._scoring import _padded, device_of, eval_mode, infer_lm_kind, pad_id
from gradiend_hf.benchmarks.bootstrap import percentile_interval
from gradiend_hf.benchmarks.score import Score, ScoreTable, table_from_dict, table_to_dict
from gradiend_hf.errors import BenchmarkError

SEAT_BIAS_TYPES = ("gender", "race")
"""There is no licensed religion SEAT test (bias-bench's sent-religion files have no licence)."""

SEAT_TESTS: dict[str, tuple[str, ...]] = {
    "gender": (
        "weat6", "weat6b", "weat7", "weat7b", "weat8", "weat8b",
        "sent-weat6", "sent-weat6b", "sent-weat7", "sent-weat7b", "sent-weat8", "sent-weat8b",
        "heilman_double_bind_competent_1", "heilman_double_bind_competent_1+3-",
        "heilman_double_bind_competent_1-", "heilman_double_bind_competent_one_sentence",
        "heilman_double_bind_competent_one_word", "sent-heilman_double_bind_competent_one_word",
        "heilman_double_bind_likable_1", "heilman_double_bind_likable_1+3-", "heilman_double_bind_likable_1-",
        "heilman_double_bind_likable_one_sentence", "heilman_double_bind_likable_one_word",
        "sent-heilman_double_bind_likable_one_word",
    ),
    "race": (
        "weat3", "weat3b", "weat4", "weat5", "weat5b",
        "sent-weat3", "sent-weat3b", "sent-weat4", "sent-weat5", "sent-weat5b",
        "angry_black_woman_stereotype", "angry_black_woman_stereotype_b",
        "sent-angry_black_woman_stereotype", "sent-angry_black_woman_stereotype_b",
    ),
}  # fmt: skip
"""Every shipped (licensed, CC BY-NC 4.0) test by the bias it measures; see the data's ATTRIBUTION.md.

WEAT 6-8 and the Heilman double-bind tests contrast male and female; WEAT 3-5 contrast European- and
African-American names or terms; the angry-black-woman tests contrast White and Black women (race and gender,
grouped under race as in bias-bench)."""

DEFAULT_SEAT_TESTS: dict[str, tuple[str, ...]] = {
    "gender": ("sent-weat6", "sent-weat6b", "sent-weat7", "sent-weat7b", "sent-weat8", "sent-weat8b"),
    "race": (
        "sent-angry_black_woman_stereotype", "sent-angry_black_woman_stereotype_b",
        "sent-weat3", "sent-weat3b", "sent-weat4", "sent-weat5", "sent-weat5b",
    ),
}  # fmt: skip
"""The sentence tests bias-bench reports (Meade et al. 2022), run when no test names are given."""

PERMUTATIONS = 100_000
"""The exact test is used when X ∪ Y has at most this many equal-size partitions, else this many samples."""


@dataclass(frozen=True)
class SeatTest:
    """Two target sets (X, Y) and two attribute sets (A, B) of sentences or words."""

    name: str
    bias_type: str
    categories: tuple[str, str, str, str]
    """Category names of X, Y, A, B (e.g. MaleNames, FemaleNames, Career, Family)."""
    x: tuple[str, ...]
    y: tuple[str, ...]
    a: tuple[str, ...]
    b: tuple[str, ...]

    @classmethod
    def from_json(cls, name: str, bias_type: str, data: dict[str, Any]) -> SeatTest:
        require_fields(data, ("targ1", "targ2", "attr1", "attr2"), f"SEAT test {name!r}")
        sets = [data[k] for k in ("targ1", "targ2", "attr1", "attr2")]
        return cls(name, bias_type, tuple(s["category"] for s in sets), *(tuple(s["examples"]) for s in sets))

    def limited(self, limit: int | None) -> SeatTest:
        """At most `limit` examples per set, spread evenly (deterministic)."""
        if limit is None:
            return self
        x, y, a, b = (tuple(evenly_spaced(s, limit)) for s in (self.x, self.y, self.a, self.b))
        return SeatTest(self.name, self.bias_type, self.categories, x, y, a, b)


@dataclass
class SeatTestResult:
    """One test: effect size d (with a bootstrap interval) and the one-sided permutation p-value."""

    name: str
    bias_type: str
    categories: tuple[str, str, str, str]
    effect_size: Score
    p_value: float
    exact: bool
    """Whether the p-value enumerates every partition (else it is sampled)."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bias_type": self.bias_type, "categories": list(self.categories),
                "effect_size": self.effect_size.to_dict(), "p_value": self.p_value, "exact": self.exact}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeatTestResult:
        return cls(data["name"], data["bias_type"], tuple(data["categories"]), Score.from_dict(data["effect_size"]),
                   float(data["p_value"]), bool(data["exact"]))  # fmt: skip


@dataclass
class SeatResult:
    """Per-test results, and per bias type (and overall) the mean absolute effect size over its tests."""

    scores: ScoreTable
    """group -> {"mean_abs_effect_size"} -> Score (count = number of tests)."""
    tests: list[SeatTestResult] = field(default_factory=list)
    similarities: dict[str, tuple[np.ndarray, np.ndarray, int]] = field(default_factory=dict, repr=False)
    """Per test: the target-attribute cosines with A and with B, and |X| (not serialised; for paired
    comparisons)."""

    def to_dict(self) -> dict[str, Any]:
        return {"scores": table_to_dict(self.scores), "tests": [t.to_dict() for t in self.tests]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SeatResult:
        return cls(table_from_dict(data["scores"]), [SeatTestResult.from_dict(t) for t in data["tests"]])


def load_seat_tests(
    *, names: Iterable[str] | None = None, bias_types: Iterable[str] | None = None
) -> list[SeatTest]:
    """Shipped SEAT tests: the bias-bench defaults (`DEFAULT_SEAT_TESTS`) unless `names` are given.

    Args:
        names: Test names (keys of any `SEAT_TESTS` list), e.g. ["sent-weat6", "weat3"].
        bias_types: Keep only tests of these bias types (gender, race).

    Raises:
        BenchmarkError: An unknown test name or bias type (religion has no licensed test).
    """
    chosen = check_bias_types(bias_types, SEAT_BIAS_TYPES, "SEAT (no licensed religion test exists)")
    bias_of = {name: bias for bias, tests in SEAT_TESTS.items() for name in tests}
    if names is None:
        names = [name for bias in chosen for name in DEFAULT_SEAT_TESTS[bias]]
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in bias_of]
    if unknown:
        raise BenchmarkError(f"Unknown SEAT tests {unknown}; expected names from {sorted(bias_of)}.")
    tests = []
    for name in names:
        if bias_of[name] not in chosen:
            continue
        path = data_file("seat").joinpath(f"{name}.jsonl")
        if not path.is_file():
            raise BenchmarkError(
                f"The SEAT test file seat/{name}.jsonl is not installed (the SEAT data are CC BY-NC 4.0 and may "
                "have been removed for commercial use); reinstall gradiend-hf or leave 'seat' out of the suites."
            )
        tests.append(SeatTest.from_json(name, bias_of[name], json.loads(path.read_text(encoding="utf-8"))))
    return tests


def associations(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """s(w, A, B) = mean_a cos(w, a) − mean_b cos(w, b) for every w of X then Y."""
    targets = _unit(np.concatenate([x, y]))
    return (targets @ _unit(a).T).mean(1) - (targets @ _unit(b).T).mean(1)


def effect_size(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Caliskan's d = (mean_x s(x) − mean_y s(y)) / std_{w ∈ X∪Y} s(w), with the sample std (ddof=1)."""
    return effect_size_from_similarities(*similarities(x, y, a, b), len(x))


def effect_size_from_similarities(cos_a: np.ndarray, cos_b: np.ndarray, n_x: int) -> float:
    """Caliskan's d from the target-attribute cosines (targets: X then Y), see `similarities`."""
    s = cos_a.mean(1) - cos_b.mean(1)
    return float((s[:n_x].mean() - s[n_x:].mean()) / s.std(ddof=1))


def p_value(
    x: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    *,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> tuple[float, bool]:
    """One-sided permutation p-value of the WEAT statistic, as sent-bias computes it.

    The statistic Σ_X s − Σ_Y s is, for a fixed X ∪ Y, monotone in Σ_X' s over a partition (X', Y'); the
    p-value is the share of equal-size partitions with Σ_X' s ≥ Σ_X s (ties count: conservative). With more
    than `permutations` partitions, `permutations − 1` random ones are drawn (seeded) and one success is added,
    so a sampled p-value is never below 1 / permutations.

    Returns:
        (p-value, whether it is exact).
    """
    s = associations(x, y, a, b)
    n, k = len(s), len(x)
    observed = s[:k].sum()
    tolerance = 1e-12 * max(1.0, abs(observed))  # equal sums computed in another order are still ties
    if math.comb(n, k) <= permutations:
        combos = np.fromiter(
            itertools.chain.from_iterable(itertools.combinations(range(n), k)), dtype=np.int64
        )
        sums = s[combos.reshape(-1, k)].sum(1)
        return float(np.mean(sums >= observed - tolerance)), True
    rng = np.random.default_rng(seed)
    hits, drawn = 1, 1
    chunk = max(1, 2_000_000 // n)
    while drawn < permutations:
        size = min(chunk, permutations - drawn)
        chosen = np.argpartition(rng.random((size, n)), k - 1, axis=1)[:, :k]
        hits += int((s[chosen].sum(1) >= observed - tolerance).sum())
        drawn += size
    return hits / drawn, False


def similarities(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosines of every target (X then Y) with every attribute of A and of B: what the effect size rests on."""
    targets = _unit(np.concatenate([x, y]))
    return targets @ _unit(a).T, targets @ _unit(b).T


@dataclass(frozen=True)
class ResampleCounts:
    """How often each item of X, Y, A and B is drawn in each bootstrap resample (rows sum to the set's size).

    Drawing them once and applying them to two models' similarities gives a *paired* bootstrap."""

    x: np.ndarray
    y: np.ndarray
    a: np.ndarray
    b: np.ndarray

    @classmethod
    def draw(cls, sizes: tuple[int, int, int, int], *, resamples: int, seed: int) -> ResampleCounts:
        rng = np.random.default_rng(seed)
        n_x, n_y, n_a, n_b = sizes
        a, b = _counts(rng, n_a, resamples), _counts(rng, n_b, resamples)
        return cls(_counts(rng, n_x, resamples), _counts(rng, n_y, resamples), a, b)


def effect_size_samples(
    x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray, *, resamples: int, seed: int
) -> np.ndarray:
    """Effect sizes of `resamples` bootstrap samples that redraw X, Y, A and B each with replacement."""
    counts = ResampleCounts.draw((len(x), len(y), len(a), len(b)), resamples=resamples, seed=seed)
    return resampled_effect_sizes(*similarities(x, y, a, b), len(x), counts)


def resampled_effect_sizes(cos_a: np.ndarray, cos_b: np.ndarray, n_x: int, counts: ResampleCounts) -> np.ndarray:
    """Effect sizes under each resample of `counts`, from the target-attribute cosines (targets: X then Y).

    Vectorised with resample counts: s for every target under every resampled (A, B) is one matrix product.
    """
    n_y = cos_a.shape[0] - n_x
    s = (cos_a @ (counts.a / cos_a.shape[1]).T - cos_b @ (counts.b / cos_b.shape[1]).T).T  # (resamples, |X|+|Y|)
    count_x, count_y = counts.x, counts.y
    weights = np.concatenate([count_x, count_y], axis=1)
    mean_x = (count_x * s[:, :n_x]).sum(1) / n_x
    mean_y = (count_y * s[:, n_x:]).sum(1) / n_y
    total = n_x + n_y
    mean = (weights * s).sum(1) / total
    std = np.sqrt((weights * (s - mean[:, None]) ** 2).sum(1) / (total - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (mean_x - mean_y) / std


def _counts(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """How often each of n items is drawn in each resample (rows sum to n)."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def _is_causal(model: torch.nn.Module, tokenizer) -> bool:
    """Whether the model attends only leftwards (a causal LM or its bare body)."""
    try:
        return infer_lm_kind(model) == "causal"
    except BenchmarkError:  # a bare body: decoders' tokenizers have no mask token
        return getattr(tokenizer, "mask_token_id", None) is None


@torch.no_grad()
def sentence_embeddings(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 16,
    max_length: int = 128,
    skip_bos: bool | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Mean of the last hidden states over each text's tokens (attention-masked), as bias-bench pools them.

    A causal LM's leading BOS token is left out of the mean (`skip_bos`, by default for causal models): it attends
    only to itself, so its state is the same vector for every sentence, and averaging it in pulls all embeddings
    toward one point and shrinks the effect sizes (Gemma adds a BOS; GPT-2, which bias-bench evaluates, adds
    none). A masked LM's [CLS] and [SEP] see the whole sentence and stay in, as in bias-bench.

    Runs only the model's body (`model.base_model`), so a causal LM's 262k-vocabulary head costs nothing.
    Embeddings are L2-normalised, as in May et al. (cosines do not change).

    Returns:
        A float64 array (len(texts), hidden size).
    """
    body = getattr(model, "base_model", None)
    body = model if body is None else body
    device = device_of(model)
    encoded = tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_length)[
        "input_ids"
    ]
    skip_bos = _is_causal(model, tokenizer) if skip_bos is None else skip_bos
    bos = tokenizer.bos_token_id
    order = sorted(range(len(texts)), key=lambda i: (-len(encoded[i]), i))
    result: list[np.ndarray | None] = [None] * len(texts)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    with eval_mode(model):
        for batch in tqdm(batches, desc="SEAT embeddings", disable=not progress, leave=False):
            ids, mask = _padded([encoded[i] for i in batch], pad_id(tokenizer), device)
            output = body(input_ids=ids, attention_mask=mask)
            hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            if skip_bos and bos is not None:
                leading = (ids[:, :1] == bos) & (mask.sum(1, keepdim=True) > 1)  # never empty a one-token text
                weights[:, :1] = weights[:, :1] * (~leading).unsqueeze(-1).to(hidden.dtype)
            pooled = ((hidden * weights).sum(1) / weights.sum(1)).double().cpu().numpy()
            for row, index in enumerate(batch):
                result[index] = pooled[row]
    return _unit(np.stack(result))


def seat_score(
    model: torch.nn.Module,
    tokenizer,
    *,
    tests: Sequence[SeatTest] | Sequence[str] | None = None,
    bias_types: Iterable[str] | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    max_length: int = 128,
    bootstrap: int = 1000,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
    progress: bool = False,
) -> SeatResult:
    """Runs SEAT tests (effect size 0 is unbiased) on any transformers model with a body.

    Args:
        model: A transformers model (masked LM, causal LM or bare encoder).
        tokenizer: Its tokenizer.
        tests: SeatTest objects or shipped test names; `DEFAULT_SEAT_TESTS` when None.
        bias_types: gender and/or race; all when None.
        limit: At most this many sentences per target/attribute set (deterministic, spread evenly).
        batch_size: Sentences per forward pass.
        max_length: Longer sentences are truncated.
        bootstrap: Resamples for the effect-size intervals (X, Y, A, B each redrawn); 0: none.
        permutations: Exact p-value up to this many partitions, else this many samples.
        seed: Seed of the bootstrap and of the sampled p-values.
        progress: Show tqdm bars.

    Returns:
        Per-test effect sizes and p-values; per bias type, the mean absolute effect size.
    """
    if tests is None or all(isinstance(t, str) for t in tests):
        tests = load_seat_tests(names=tests, bias_types=bias_types)
    else:
        chosen = check_bias_types(bias_types, sorted({t.bias_type for t in tests}), "SEAT tests")
        tests = [t for t in tests if t.bias_type in chosen]
    tests = [t.limited(limit) for t in tests]
    if not tests:
        raise BenchmarkError("SEAT needs at least one test, got none.")
    for test in tests:
        if min(len(test.x), len(test.y), len(test.a), len(test.b)) < 1 or len(test.x) + len(test.y) < 3:
            raise BenchmarkError(f"SEAT test {test.name!r} needs non-empty sets and at least 3 targets.")
    unique = list(dict.fromkeys(s for t in tests for s in (*t.x, *t.y, *t.a, *t.b)))
    vectors = sentence_embeddings(model, tokenizer, unique, batch_size=batch_size, max_length=max_length,
                                  progress=progress)  # fmt: skip
    index = {text: i for i, text in enumerate(unique)}
    results, samples, cosines = [], {}, {}
    for number, test in enumerate(tests):
        x, y, a, b = (vectors[[index[s] for s in part]] for part in (test.x, test.y, test.a, test.b))
        cosines[test.name] = (*similarities(x, y, a, b), len(x))
        value = effect_size(x, y, a, b)
        p, exact = p_value(x, y, a, b, permutations=permutations, seed=seed + number)
        draws = (
            effect_size_samples(x, y, a, b, resamples=bootstrap, seed=seed + number) if bootstrap else None
        )
        samples[test.name] = draws
        ci = percentile_interval(draws) if draws is not None else None
        results.append(SeatTestResult(test.name, test.bias_type, test.categories,
                                      Score(value, ci, len(test.x) + len(test.y)), p, exact))  # fmt: skip
    table: ScoreTable = {}
    groups = [b for b in SEAT_BIAS_TYPES if any(r.bias_type == b for r in results)]
    groups += sorted({r.bias_type for r in results} - set(groups))
    for group in [*groups, "overall"]:
        members = [r for r in results if group in ("overall", r.bias_type)]
        value = float(np.mean([abs(r.effect_size.value) for r in members]))
        ci = None
        if bootstrap:
            # Each draw averages the tests' draws of the same number, signed by the observed effect: |d*| would
            # be pushed away from 0 (folding), so that its interval could miss the estimate itself.
            draws = np.mean([np.sign(r.effect_size.value) * samples[r.name] for r in members], axis=0)
            interval = percentile_interval(draws)
            ci = None if interval is None else (max(0.0, interval[0]), max(0.0, interval[1]))
        table[group] = {"mean_abs_effect_size": Score(value, ci, len(members))}
    return SeatResult(scores=table, tests=results, similarities=cosines)
