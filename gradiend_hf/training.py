"""`TrainingArguments` and `GradiendTrainer`: fit a GRADIEND model to a base model's gradients, resumably.

One step: pick a class (alternating), sample a batch of that class's training texts, take ∇source and ∇± of the mean
LM loss (one forward pass), and minimise MSE(dec(enc(∇source)), ∇±) with AdamW. Every `eval_steps` the encoder
reads the validation texts (all at once, by forward-mode derivatives) and the Pearson correlation of h with the
class (+1/−1) decides which weights are kept. Batches depend only on (seed, step), so a resumed run sees the same
data as an uninterrupted one; with `torchrun` each process takes a slice of the global batch and the base-model
gradients are averaged across processes before the GRADIEND update, which is replicated, or with `fsdp=True` split
across the processes (`sharding`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .atomic_io import output_lock
from .checkpoints import STATE_NAME, clone_state, load_checkpoint, load_weights, save_checkpoint, save_weights
from .errors import TrainingError
from .evaluation.encoder import encoder_correlation
from .gradients import GradientEngine, drop_multi_token_examples
from .modeling_gradiend import GradiendModel
from .reconstruction import reconstruction_gradients
from .sharding import gathered, load_local_state, local_state, shard_gradiend, unshard
from .training_args import TrainingArguments

logger = logging.getLogger(__name__)

# fp16 gradients of small LM losses underflow; a static scale keeps them representable (bf16 needs none).
_FP16_GRAD_SCALE = 1024.0
_FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

LOG_NAME = "training_log.jsonl"
CURVE_NAME = "training_curve.png"
LAST_CHECKPOINT = "checkpoint-last"
BEST_CHECKPOINT = "checkpoint-best"


@dataclass
class SeedResult:
    """How one seed went: its best validation correlation and when it was reached."""

    seed: int
    best_step: int
    best_correlation: float
    steps_done: int


@dataclass
class TrainingResult:
    """What `GradiendTrainer.train` returns; the model itself holds the selected weights."""

    best_seed: int
    best_step: int
    best_correlation: float
    seeds: list[SeedResult] = field(default_factory=list)
    seconds: float = 0.0
    output_dir: str | None = None
    interrupted: bool = False


class _StopRequest:
    """First Ctrl-C asks the loop to stop after the current step (and checkpoint); a second one interrupts."""

    def __init__(self):
        self.requested = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[_StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            self.requested = True
            signal.signal(signal.SIGINT, previous)
            tqdm.write("Interrupt: finishing this step and writing a resumable checkpoint (Ctrl-C again to abort).")

        signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


class GradiendTrainer:
    """Trains a [`GradiendModel`] on the gradients of its base model for a feature dataset.

    Args:
        model: the GRADIEND model (its config names the base parameters and the source mode).
        base_model: the base language model (a transformers masked or causal LM).
        tokenizer: the base model's tokenizer.
        feature: a `FeatureDataset` (train and validation splits; `classes[0]` encodes +1).
        args: `TrainingArguments`.

    Example:

    ```python
    >>> trainer = GradiendTrainer(model, base, tokenizer, gh.features.gender(), TrainingArguments(max_steps=100))
    >>> result = trainer.train()
    >>> result.best_correlation
    0.99
    ```
    """

    def __init__(self, model: GradiendModel, base_model, tokenizer, feature, args: TrainingArguments | None = None):
        from accelerate import PartialState

        self.args = args or TrainingArguments()
        self.model = model
        self.base_model = base_model
        self.feature = feature
        # accelerate's process state knows rank, world size and device under torchrun (gloo on CPU, NCCL on GPUs).
        multi_process = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.state = PartialState(cpu=multi_process and not torch.cuda.is_available())
        self.device = torch.device("cpu") if self.args.use_cpu else self.state.device
        model.check_base_model(base_model)
        self.base_model.to(self.device)
        self.model.to(self.device)
        self.engine = GradientEngine(base_model, tokenizer, model.config.param_names, lm_kind=model.config.lm_kind,
                                     max_length=self.args.max_length)
        classes = list(feature.classes)
        if set(classes) != set(model.config.feature_classes):
            raise TrainingError(
                f"The feature's classes {classes} differ from the model's {model.config.feature_classes}; build the "
                f"GRADIEND model with `for_base_model(..., feature=feature)`."
            )
        self.classes = [model.config.positive_class, model.config.negative_class]
        self.train_pools = self._usable_pools(feature.train, "train")
        validation = self.usable_examples(feature.validation, "validation")
        self.validation = self._balanced_subset(validation, self.args.eval_max_examples)
        if not self.validation:
            raise TrainingError("The feature has no usable validation examples; the trainer needs some to select "
                                "the best checkpoint.")
        world = self.state.num_processes
        if self.args.batch_size % world:
            raise TrainingError(
                f"`batch_size` ({self.args.batch_size}) must be divisible by the number of processes ({world})."
            )
        self.output_dir = Path(self.args.output_dir) if self.args.output_dir else None
        self.sharded = self.args.fsdp and world > 1
        if self.args.fsdp and world == 1:
            logger.info("fsdp=True with one process: nothing to split, the GRADIEND is trained whole.")

    # -- data ----------------------------------------------------------------------------------------------------------
    def usable_examples(self, examples: Sequence, split: str) -> list:
        """The examples whose target words are single tokens (the others are dropped with a warning)."""
        kept, dropped = drop_multi_token_examples(list(examples), self.engine.slots)
        if dropped:
            logger.warning("Dropped %d of %d %s examples whose target words are not single tokens.", dropped,
                           len(examples), split)
        return kept

    def _usable_pools(self, examples: Sequence, split: str) -> dict[str, list]:
        kept = self.usable_examples(examples, split)
        pools = {c: [e for e in kept if e.label == c] for c in self.classes}
        for cls, pool in pools.items():
            if not pool:
                raise TrainingError(f"The {split} split has no usable examples of class {cls!r}.")
        return pools

    def _balanced_subset(self, examples: list, limit: int | None) -> list:
        if limit is None or len(examples) <= limit:
            return examples
        per_class = limit // 2
        generator = torch.Generator().manual_seed(12345)
        chosen = []
        for cls in self.classes:
            pool = [e for e in examples if e.label == cls]
            order = torch.randperm(len(pool), generator=generator)[:per_class].tolist()
            chosen.extend(pool[i] for i in sorted(order))
        return chosen

    def batch_for_step(self, seed: int, step: int) -> tuple[str, list]:
        """The class and the global batch of step `step` (1-based) for `seed`; a pure function of both."""
        cls = self.classes[(step - 1) % 2]
        pool = self.train_pools[cls]
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        size = self.args.batch_size
        if len(pool) >= size:
            indices = torch.randperm(len(pool), generator=generator)[:size].tolist()
        else:
            indices = torch.randint(len(pool), (size,), generator=generator).tolist()
        return cls, [pool[i] for i in indices]

    def _local_slice(self, batch: list) -> list:
        world, rank = self.state.num_processes, self.state.process_index
        per = len(batch) // world
        return batch[rank * per: (rank + 1) * per]

    # -- gradients and one step ----------------------------------------------------------------------------------------
    def _mean_across_processes(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Average each gradient across processes, in place (no flat n-long copy of the selection)."""
        if self.state.num_processes == 1:
            return tensors
        for tensor in tensors.values():
            torch.distributed.all_reduce(tensor)
            tensor.div_(self.state.num_processes)
        return tensors

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the base model's forward pass (`mixed_precision`); the GRADIEND stays in fp32."""
        if self.args.mixed_precision == "no":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.args.mixed_precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def training_step(self, optimizer: torch.optim.Optimizer, examples: list) -> float:
        """One GRADIEND update from a batch of texts of one class; returns the reconstruction loss."""
        pair = self.engine.gradients(examples, source=self.model.config.source, autocast=self.autocast(),
                                     grad_scale=_FP16_GRAD_SCALE if self.args.mixed_precision == "fp16" else 1.0)
        source = self._mean_across_processes(pair.source)
        target = source if pair.target is pair.source else self._mean_across_processes(pair.target)
        del pair
        self.model.train()

        def update(param: torch.nn.Parameter) -> None:
            # AdamW on this one parameter (the others have no gradient now), then its gradient is dropped: the 3n
            # gradients are never held at once. Each parameter's update is the same as in one step over all.
            optimizer.step()
            param.grad = None

        # The MSE's gradients in closed form (no autograd graph over n-long tensors); equal to
        # `self.model(source, target).loss.backward()` followed by `optimizer.step()`, to float round-off.
        loss = reconstruction_gradients(self.model, source, target, on_gradient=update)
        del source, target
        return loss

    @torch.no_grad()
    def validate(self) -> tuple[float, dict[str, float]]:
        """Pearson r of the encoded validation texts with their class (+1 / −1), and the mean h per class."""
        with gathered(self.model.encoder):  # sharded weights: the whole encoder while the texts are encoded
            result = encoder_correlation(self.model, self.engine, self.validation,
                                         batch_size=self.args.eval_batch_size)
        return result.pearson_r, result.mean_h

    # -- checkpoints ---------------------------------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.AdamW:
        # The fused kernel updates each tensor in one pass without n-long temporaries (CPU and CUDA, torch >= 2.4).
        fused = self.device.type in ("cpu", "cuda") and all(p.dtype in _FUSED_DTYPES for p in self.model.parameters())
        return torch.optim.AdamW(self.model.parameters(), lr=self.args.learning_rate,
                                 weight_decay=self.args.weight_decay, fused=fused or None)

    def _load_checkpoint(self, folder: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        state = json.loads((folder / STATE_NAME).read_text())
        if state.get("param_names") != list(self.model.config.param_names):
            raise TrainingError(f"The checkpoint in {folder} was written for other base parameters; it cannot be "
                                f"resumed with this model.")
        return load_checkpoint(folder, self.model, optimizer)

    def _prepare_output_dir(self, resume: bool) -> None:
        if self.output_dir is None or not self.state.is_main_process:
            return
        if self.output_dir.exists() and any(self.output_dir.iterdir()) and not resume:
            if not self.args.overwrite_output_dir:
                raise TrainingError(
                    f"The output folder {self.output_dir} is not empty. Resume the run in it with "
                    f"`resume_from_checkpoint=True` (CLI: --resume), choose another folder, or allow replacing it "
                    f"with `overwrite_output_dir=True` (CLI: --overwrite)."
                )
            for child in self.output_dir.iterdir():
                if child.name.startswith("seed-") or child.name in (LOG_NAME, CURVE_NAME):
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def _log(self, record: dict[str, Any]) -> None:
        if self.output_dir is not None and self.state.is_main_process:
            with open(self.output_dir / LOG_NAME, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    # -- the loop ------------------------------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: bool = False) -> TrainingResult:
        """Train every seed, keep the best validation checkpoint of the best seed, normalise its sign, save it.

        Args:
            resume_from_checkpoint: continue an interrupted run from `output_dir` (its last checkpoint).

        Returns:
            A `TrainingResult`; `self.model` holds the selected weights (classes[0] encodes positive h).

        Raises:
            OutputBusyError: another process is training into (or saving to) `output_dir`.
        """
        if self.output_dir is None or not self.state.is_main_process:
            return self._train(resume_from_checkpoint)
        with output_lock(self.output_dir, what="training run"):  # a second run into the folder fails clearly
            return self._train(resume_from_checkpoint)

    def _train(self, resume_from_checkpoint: bool) -> TrainingResult:
        if resume_from_checkpoint and self.output_dir is None:
            raise TrainingError("`resume_from_checkpoint` needs `output_dir` (where the checkpoints are).")
        self._prepare_output_dir(resume_from_checkpoint)
        started = time.time()
        results: list[SeedResult] = []
        best_states: dict[int, dict[str, torch.Tensor] | Path] = {}
        stop = _StopRequest()
        with stop.installed():
            for seed in self.args.seeds:
                seed_result, best_state, interrupted = self._train_seed(seed, resume_from_checkpoint, stop)
                results.append(seed_result)
                best_states[seed] = best_state
                if interrupted:
                    return TrainingResult(seed_result.seed, seed_result.best_step, seed_result.best_correlation,
                                          results, time.time() - started, self.args.output_dir, interrupted=True)
        best = max(results, key=lambda r: abs(r.best_correlation))
        chosen = best_states[best.seed]
        if isinstance(chosen, Path):
            load_weights(self.model, chosen)
        else:
            self.model.load_state_dict(chosen)
        if best.best_correlation < 0:  # sign normalisation: the positive class encodes +1
            self.model.flip_sign()
        result = TrainingResult(best.seed, best.best_step, abs(best.best_correlation), results,
                                time.time() - started, self.args.output_dir)
        self._record_provenance(result)
        if self.output_dir is not None and self.state.is_main_process:
            self.model.save_pretrained(self.output_dir)
            self._plot()
        self.state.wait_for_everyone()
        return result

    def _train_seed(self, seed: int, resume: bool, stop: _StopRequest):
        args = self.args
        seed_dir = self.output_dir / f"seed-{seed}" if self.output_dir is not None else None
        self.model.reset_parameters(seed)  # whole on every process (same seed, same weights), then split
        if self.sharded:
            shard_gradiend(self.model, self.device.type)
        optimizer = self._optimizer()
        step, best_r, best_step, patience = 0, 0.0, 0, 0
        # The best weights so far: on disk (the best checkpoint) when one process writes checkpoints, so that a large
        # GRADIEND (3n weights) is not held twice in memory; else a copy in memory.
        # A sharded GRADIEND keeps this process's pieces of the best weights (1/k of 3n).
        on_disk = seed_dir is not None and self.state.num_processes == 1
        best_dir = seed_dir / BEST_CHECKPOINT if seed_dir is not None else None
        best_state: dict[str, torch.Tensor] | Path = best_dir if on_disk else {}
        snapshot = local_state if self.sharded else clone_state

        def keep_best() -> dict[str, torch.Tensor] | Path:
            if best_dir is not None and self.sharded:
                save_checkpoint(best_dir, self.model)
            elif best_dir is not None and self.state.is_main_process:
                save_weights(self.model, best_dir)
            return best_dir if on_disk else snapshot(self.model)

        if resume and seed_dir is not None and (seed_dir / LAST_CHECKPOINT).is_dir():
            state = self._load_checkpoint(seed_dir / LAST_CHECKPOINT, optimizer)
            step, best_r, best_step, patience = state["step"], state["best_r"], state["best_step"], state["patience"]
            if not on_disk and best_dir.is_dir():
                current = snapshot(self.model)
                load_checkpoint(best_dir, self.model)
                best_state = snapshot(self.model)
                self._restore(current)
            if state.get("finished"):
                return SeedResult(seed, best_step, best_r, step), self._finish_seed(best_state, False), False
        if step == 0 or not (best_state.is_dir() if on_disk else best_state):
            best_state = keep_best()  # the initial weights, until a validation beats them
        bar = tqdm(total=args.max_steps, initial=step, desc=f"GRADIEND seed {seed}", dynamic_ncols=True,
                   disable=not args.progress_bar or not self.state.is_main_process)
        interrupted = False
        while step < args.max_steps:
            step += 1
            tick = time.time()
            cls, batch = self.batch_for_step(seed, step)
            loss = self.training_step(optimizer, self._local_slice(batch))
            record: dict[str, Any] = {"seed": seed, "step": step, "class": cls, "loss": loss,
                                      "seconds": round(time.time() - tick, 3)}
            if step % args.eval_steps == 0 or step == args.max_steps:
                r, means = self.validate()
                record.update({"validation_pearson_r": r, "validation_mean_h": means})
                if abs(r) > abs(best_r) or best_step == 0:
                    best_r, best_step, patience = r, step, 0
                    best_state = keep_best()
                else:
                    patience += 1
                bar.set_postfix(loss=f"{loss:.3g}", r=f"{r:+.3f}", best=f"{best_r:+.3f}")
            else:
                bar.set_postfix(loss=f"{loss:.3g}", best=f"{best_r:+.3f}")
            self._log(record)
            bar.update(1)
            done = step >= args.max_steps or (
                args.early_stopping_patience is not None and patience >= args.early_stopping_patience
            )
            if seed_dir is not None and (done or step % args.save_steps == 0 or stop.requested):
                save_checkpoint(seed_dir / LAST_CHECKPOINT, self.model, optimizer, {
                    "seed": seed, "step": step, "best_r": best_r, "best_step": best_step, "patience": patience,
                    "finished": done, "param_names": list(self.model.config.param_names),
                    "args": self.args.to_dict(),
                })
            if stop.requested and not done:
                interrupted = True
                tqdm.write(f"Stopped at step {step}; resume with `resume_from_checkpoint=True` (CLI: --resume).")
                break
            if done:
                break
        bar.close()
        return SeedResult(seed, best_step, best_r, step), self._finish_seed(best_state, interrupted), interrupted

    def _restore(self, state: dict[str, torch.Tensor]) -> None:
        if self.sharded:
            load_local_state(self.model, state)
        else:
            self.model.load_state_dict(state)

    def _finish_seed(self, best_state: dict[str, torch.Tensor] | Path, interrupted: bool):
        """A sharded model becomes whole again (with its best weights, unless interrupted: then its last ones)."""
        if not self.sharded:
            return best_state
        if not interrupted:
            self._restore(best_state)
        unshard(self.model)
        # its own tensors; a copy only when a later seed re-draws them in place
        return clone_state(self.model) if self.args.num_seeds > 1 else self.model.state_dict()

    def _record_provenance(self, result: TrainingResult) -> None:
        import transformers

        from . import __version__

        self.model.config.training = {
            "feature": self.feature.name,
            "train_examples": sum(len(p) for p in self.train_pools.values()),
            "validation_examples": len(self.validation),
            "max_steps": self.args.max_steps,
            "batch_size": self.args.batch_size,
            "learning_rate": self.args.learning_rate,
            "weight_decay": self.args.weight_decay,
            "seeds": self.args.seeds,
            "best_seed": result.best_seed,
            "best_step": result.best_step,
            "validation_pearson_r": round(result.best_correlation, 4),
            "train_seconds": round(result.seconds, 1),
            "processes": self.state.num_processes,
            "fsdp": self.sharded,
            "gradiend_hf": __version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        }

    def _plot(self) -> None:
        from .evaluation.plots import plot_training_curve  # matplotlib only when a curve is drawn

        plot_training_curve(self.output_dir / LOG_NAME, self.output_dir / CURVE_NAME)


def train_gradiend(base_model, tokenizer, feature, *, params: Sequence[str] | None = None,
                   args: TrainingArguments | None = None, **model_kwargs) -> tuple[GradiendModel, TrainingResult]:
    """One call from a base model and a feature to a trained GRADIEND model (the steps are public too)."""
    model = GradiendModel.for_base_model(base_model, params=params, feature=feature, **model_kwargs)
    result = GradiendTrainer(model, base_model, tokenizer, feature, args).train()
    return model, result


__all__ = ["GradiendTrainer", "SeedResult", "TrainingArguments", "TrainingResult", "train_gradiend"]

