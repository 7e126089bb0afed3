"""GRADIEND encoder-decoder as a transformers `PreTrainedModel`: encode gradients to a feature, decode to updates."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .adapters import DeltaAdapter, base_fingerprint, describe_modules
from .adapters.fingerprints import check_fingerprint
from .configuration_gradiend import GradiendConfig
from .errors import ParameterSelectionError
from .gradiend_files import SAFETENSORS_INDEX_FILE, download_checkpoint, verify_checkpoint
from .gradients import GradientEngine, select_parameters

MODEL_CARD_NAME = "README.md"
_WEIGHT_FILES = ("model*.safetensors", SAFETENSORS_INDEX_FILE, "pytorch_model*.bin", "pytorch_model.bin.index.json")
"""Weights of an earlier save that a new save drops (a loader would mix stale shards with the new ones)."""

GradientInput = Mapping[str, torch.Tensor] | Sequence[torch.Tensor]


@dataclass
class GradiendOutput(ModelOutput):
    """Output of [`GradiendModel.forward`].

    Args:
        loss (`torch.Tensor`, *optional*): mean squared error between the decoded update and `target`, over all n
            entries; returned when `target` is given.
        encoded (`torch.Tensor`): feature values h, shape `(batch, latent_size)` (or `(latent_size,)` unbatched).
        decoded (`tuple[torch.Tensor]`): decoded updates, one tensor per selected base parameter, in config order.
    """

    loss: torch.Tensor | None = None
    encoded: torch.Tensor | None = None
    decoded: tuple[torch.Tensor, ...] | None = None


def _max_abs(encoder: nn.Module | None) -> float:
    weights = encoder.weights if encoder is not None else []
    return max((float(w.detach().abs().max()) for w in weights), default=1.0)


def _activation(name: str):
    if name == "tanh":
        return torch.tanh
    if name == "hardtanh":
        return nn.functional.hardtanh
    return lambda x: x


class GradiendEncoder(nn.Module):
    """h = act(sum_i <W_e[i], g[i]> + b_e); weight `weight_i` has shape `(latent, *shape of base parameter i)`.

    One tensor per selected base parameter (never one n-long vector), so checkpoints shard for n up to 1e9.
    """

    def __init__(self, shapes: Sequence[Sequence[int]], latent_size: int):
        super().__init__()
        for i, shape in enumerate(shapes):
            self.register_parameter(f"weight_{i}", nn.Parameter(torch.empty(latent_size, *shape)))
        self.bias = nn.Parameter(torch.empty(latent_size))
        self._count = len(shapes)

    @property
    def weights(self) -> list[nn.Parameter]:
        return [getattr(self, f"weight_{i}") for i in range(self._count)]


class GradiendDecoder(nn.Module):
    """dec(h)[i] = h @ W_d[i] + b_d[i]; `weight_i` is `(latent, *shape)`, `bias_i` has the base parameter's shape."""

    def __init__(self, shapes: Sequence[Sequence[int]], latent_size: int):
        super().__init__()
        for i, shape in enumerate(shapes):
            self.register_parameter(f"weight_{i}", nn.Parameter(torch.empty(latent_size, *shape)))
            self.register_parameter(f"bias_{i}", nn.Parameter(torch.empty(*shape)))
        self._count = len(shapes)

    @property
    def weights(self) -> list[nn.Parameter]:
        return [getattr(self, f"weight_{i}") for i in range(self._count)]

    @property
    def biases(self) -> list[nn.Parameter]:
        return [getattr(self, f"bias_{i}") for i in range(self._count)]


class GradiendPreTrainedModel(PreTrainedModel):
    """Loading, saving, initialisation and Hub plumbing shared by GRADIEND models."""

    config_class = GradiendConfig
    base_model_prefix = "gradiend"
    main_input_name = "gradients"
    _no_split_modules = ["GradiendEncoder", "GradiendDecoder"]
    _supports_param_buffer_assignment = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # The paper's initialisation: the encoder like torch.nn.Linear(n, latent) (uniform with bound 1/sqrt(n)),
        # the decoder weight and bias uniform in [-m, m] with m = max |W_e|.
        if isinstance(module, GradiendEncoder):
            bound = 1.0 / math.sqrt(max(self.config.num_selected, 1))
            for tensor in [*module.weights, module.bias]:
                init.uniform_(tensor, -bound, bound)
        elif isinstance(module, GradiendDecoder):
            m = _max_abs(getattr(self, "encoder", None))
            for tensor in [*module.weights, *module.biases]:
                init.uniform_(tensor, -m, m)

    @torch.no_grad()
    def reset_parameters(self, seed: int | None = None) -> None:
        """Re-draw all weights with the paper's initialisation (from `seed`, if given), e.g. to train another seed."""
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        bound = 1.0 / math.sqrt(max(self.config.num_selected, 1))
        for tensor in [*self.encoder.weights, self.encoder.bias]:
            tensor.copy_(torch.empty(tensor.shape).uniform_(-bound, bound, generator=generator))
        m = _max_abs(self.encoder)
        for tensor in [*self.decoder.weights, *self.decoder.biases]:
            tensor.copy_(torch.empty(tensor.shape).uniform_(-m, m, generator=generator))

    # -- loading -----------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args, **kwargs):
        """Load a GRADIEND model from a local folder or a Hub repository (also offline, from the HF cache).

        The files are checked before anything is loaded, so that a missing, truncated or mismatched checkpoint fails
        with an error naming the file or parameter. Only safetensors and JSON are read; nothing is unpickled.
        """
        source = str(pretrained_model_name_or_path)
        subfolder = kwargs.get("subfolder") or ""
        if os.path.isdir(source):
            folder = Path(source, subfolder)
        else:
            folder = download_checkpoint(source, kwargs)
        verify_checkpoint(folder)
        kwargs["use_safetensors"] = True
        kwargs.pop("subfolder", None)
        for key in ("revision", "cache_dir", "force_download", "local_files_only", "token", "proxies"):
            kwargs.pop(key, None)
        model = super().from_pretrained(folder, *model_args, **kwargs)
        model.config._name_or_path = source
        model.name_or_path = source
        return model

    # -- saving ------------------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, *args, model_card: bool = True, **kwargs):
        """Save config and sharded safetensors like any transformers model, plus our model card.

        A `README.md` that gradiend_hf did not write (no marker line) is kept: a card the user wrote or edited is
        never overwritten; our own card is refreshed. Crash-safe: everything is staged in a hidden sibling folder
        and swapped into place at once, so a process killed mid-save leaves the previous save loadable; other files
        in the folder (a training log, checkpoints) are kept, earlier weight shards are not.
        """
        from .atomic_io import atomic_folder
        from .hub import CARD_MARKER

        folder = Path(save_directory)
        card_path = folder / MODEL_CARD_NAME
        ours = not card_path.exists() or CARD_MARKER in card_path.read_text(encoding="utf-8", errors="replace")
        if kwargs.get("push_to_hub", False):
            kwargs.setdefault("repo_id", folder.name)  # transformers names the repo after the folder it saved to
        with atomic_folder(folder, what="GRADIEND model", stale=_WEIGHT_FILES) as staging:
            super().save_pretrained(staging, *args, **kwargs)
            if model_card and ours and not kwargs.get("push_to_hub", False):
                self.model_card().save(staging / MODEL_CARD_NAME)

    def model_card(self, repo_id: str | None = None, tags: list[str] | None = None):
        """Our model card (`huggingface_hub.ModelCard`) rendered from `cards/gradiend_model.md`."""
        from .hub import render_gradiend_card
        from .zoo import EMBEDDED_MODELS, hub_id_for

        base = self.config.base_model_name_or_path
        embedded = EMBEDDED_MODELS.get(base or "")
        return render_gradiend_card(
            self.config,
            repo_id=repo_id,
            base_model_id=hub_id_for(base),
            license=embedded.license if embedded else None,
            license_note=embedded.license_note if embedded else None,
            extra_tags=tags,
        )

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, private: bool | None = None,
                    token: bool | str | None = None, revision: str | None = None, create_pr: bool = False,
                    max_shard_size: int | str | None = "5GB", tags: list[str] | None = None) -> Any:
        """Upload weights, config and our model card (not transformers' generic one) to the Hub.

        A README on the Hub that gradiend_hf did not write is kept.
        """
        from .hub import push_folder_with_card

        return push_folder_with_card(
            save=lambda folder: self.save_pretrained(folder, max_shard_size=max_shard_size, model_card=False),
            card=self.model_card(repo_id=repo_id, tags=tags),
            repo_id=repo_id,
            commit_message=commit_message or "Upload GRADIEND model",
            private=private,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )


class GradiendModel(GradiendPreTrainedModel):
    """A GRADIEND feature neuron: an encoder reading a gradient and a decoder writing a weight update.

    `encode` takes per-parameter gradients (a dict keyed by base parameter name, or tensors in config order, with an
    optional leading batch dimension) and returns h; `decode` turns h into per-parameter updates.

    Example:

    ```python
    >>> import gradiend_hf as gh
    >>> model = gh.GradiendModel.for_base_model(base, params=["model.layers.*.mlp.down_proj.weight"])
    >>> h = model.encode(gradients)          # gradients: {name: tensor}
    >>> update = model.decode(1.0)           # {name: tensor}, ready to add to the base parameters
    ```
    """

    def __init__(self, config: GradiendConfig):
        super().__init__(config)
        self.encoder = GradiendEncoder(config.param_shapes, config.latent_size)
        self.decoder = GradiendDecoder(config.param_shapes, config.latent_size)
        self._act = _activation(config.activation)
        self.post_init()

    # -- construction ------------------------------------------------------------------------------------------------
    @classmethod
    def for_base_model(
        cls,
        base_model: nn.Module,
        *,
        params: Sequence[str] | None = None,
        layers: Sequence[int] | range | None = None,
        include_embeddings: bool = False,
        feature: Any = None,
        source: str = "factual",
        activation: str = "tanh",
        latent_size: int = 1,
        dtype: torch.dtype = torch.float32,
        base_model_name_or_path: str | None = None,
        base_model_revision: str | None = None,
        seed: int | None = None,
    ) -> GradiendModel:
        """Build a freshly initialised GRADIEND model spanning parameters of `base_model`.

        Args:
            base_model: the transformers language model whose gradients the GRADIEND model will read.
            params: glob patterns over parameter names (`"model.layers.*.mlp.*"`); default: every transformer-block
                parameter (not the LM head; embeddings only with `include_embeddings`).
            layers: keep only parameters of these block indices.
            include_embeddings: also select the input embeddings.
            feature: a `FeatureDataset` or its `spec()` dict (name, classes, targets); classes[0] encodes +1.
            source: the gradient the encoder reads: `"factual"`, `"counterfactual"` or `"diff"`.
            activation: `"tanh"` (paper), `"hardtanh"` or `"identity"`.
            latent_size: number of feature neurons.
            dtype: dtype of the GRADIEND weights.
            base_model_name_or_path: provenance; defaults to `base_model.name_or_path`.
            base_model_revision: provenance; the Hub revision of the base model.
            seed: seed for the initialisation (otherwise torch's global generator is used).

        Raises:
            ParameterSelectionError: a pattern matches no parameter of the base model.
        """
        selected = select_parameters(base_model, params, layers=layers, include_embeddings=include_embeddings)
        base_config = getattr(base_model, "config", None)
        spec = feature.spec() if hasattr(feature, "spec") else (dict(feature) if feature else {})
        classes = list(spec.get("classes", ["positive", "negative"]))
        config = GradiendConfig(
            base_model_name_or_path=base_model_name_or_path or getattr(base_model, "name_or_path", None) or None,
            base_model_revision=base_model_revision,
            base_model_type=getattr(base_config, "model_type", None),
            base_model_fingerprint=base_fingerprint(base_model, list(selected)),
            param_modules=describe_modules(base_model, list(selected)),
            lm_kind=infer_lm_kind(base_model),
            param_names=list(selected),
            param_shapes=[list(p.shape) for p in selected.values()],
            feature_name=str(spec.get("name", "feature")),
            feature_classes=classes,
            positive_class=classes[0],
            feature_targets={k: list(v) for k, v in spec.get("targets", {}).items()},
            source=source,
            activation=activation,
            latent_size=latent_size,
        )
        if seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = cls(config)
        else:
            model = cls(config)
        return model.to(dtype)

    # -- the method --------------------------------------------------------------------------------------------------
    @property
    def param_names(self) -> list[str]:
        return list(self.config.param_names)

    def _as_list(self, tensors: GradientInput, what: str) -> list[torch.Tensor]:
        names = self.config.param_names
        if isinstance(tensors, Mapping):
            missing = [n for n in names if n not in tensors]
            if missing:
                raise ParameterSelectionError(
                    f"{what} lacks {len(missing)} of the {len(names)} selected parameters, e.g. `{missing[0]}`; "
                    f"pass a tensor for every name in `model.config.param_names`."
                )
            tensors = [tensors[n] for n in names]
        tensors = list(tensors)
        if len(tensors) != len(names):
            raise ParameterSelectionError(
                f"{what} has {len(tensors)} tensors but the model spans {len(names)} parameters."
            )
        return tensors

    def _batched(self, tensors: list[torch.Tensor], what: str) -> tuple[list[torch.Tensor], bool]:
        shapes = self.config.param_shapes
        first = tensors[0]
        batched = first.dim() == len(shapes[0]) + 1
        flat = []
        for name, shape, tensor in zip(self.config.param_names, shapes, tensors):
            expected = tuple(shape)
            found = tuple(tensor.shape[1:] if batched else tensor.shape)
            if found != expected:
                raise ParameterSelectionError(
                    f"{what} for `{name}` has shape {tuple(tensor.shape)}; expected {expected}"
                    f"{' with a leading batch dimension' if batched else ''}."
                )
            flat.append(tensor.reshape(tensor.shape[0] if batched else 1, -1))
        return flat, batched

    def encode_linear(self, gradients: GradientInput) -> torch.Tensor:
        """The encoder before its activation: W_e^T g + b_e, shape `(batch, latent)` or `(latent,)`."""
        flat, batched = self._batched(self._as_list(gradients, "gradients"), "gradient")
        dtype = self.encoder.bias.dtype
        z = self.encoder.bias.unsqueeze(0)
        for weight, g in zip(self.encoder.weights, flat):
            z = z + g.to(dtype) @ weight.reshape(weight.shape[0], -1).T
        return z if batched else z[0]

    def encode(self, gradients: GradientInput) -> torch.Tensor:
        """Feature value h = act(W_e^T g + b_e), shape `(batch, latent)` or `(latent,)`."""
        return self._act(self.encode_linear(gradients))

    def activate(self, z: torch.Tensor) -> torch.Tensor:
        """Apply the encoder activation to pre-activations (e.g. from directional derivatives)."""
        return self._act(z)

    def decode(self, h: float | torch.Tensor) -> dict[str, torch.Tensor]:
        """Weight update h * W_d + b_d per selected base parameter, shape `(*param)` or `(batch, *param)`."""
        dtype = self.decoder.biases[0].dtype
        h = torch.as_tensor(h, dtype=dtype, device=self.decoder.biases[0].device)
        latent = self.config.latent_size
        if h.dim() == 0:
            h = h.reshape(1)
        batched = h.dim() == 2
        if h.shape[-1] != latent:
            raise ValueError(f"`h` must end in the latent size {latent}, got shape {tuple(h.shape)}.")
        h2 = h if batched else h.unsqueeze(0)
        out = {}
        for name, weight, bias in zip(self.config.param_names, self.decoder.weights, self.decoder.biases):
            update = (h2 @ weight.reshape(latent, -1)).reshape(h2.shape[0], *bias.shape) + bias
            out[name] = update if batched else update[0]
        return out

    def forward(self, gradients: GradientInput, target: GradientInput | None = None) -> GradiendOutput:
        """Encode `gradients`, decode the feature and, given `target` (the ∇± gradients), the MSE loss."""
        h = self.encode(gradients)
        decoded = self.decode(h)
        loss = None
        if target is not None:
            targets = self._as_list(target, "target")
            total = sum(
                (dec.float() - tgt.to(dec.device).float()).pow(2).sum()
                for dec, tgt in zip(decoded.values(), targets)
            )
            batch = h.shape[0] if h.dim() == 2 else 1
            loss = total / (self.config.num_selected * batch)
        return GradiendOutput(loss=loss, encoded=h, decoded=tuple(decoded.values()))

    @torch.no_grad()
    def encode_examples(self, engine: GradientEngine, examples: Sequence[Any], *, batch_size: int = 16,
                        progress: bool = False) -> torch.Tensor:
        """Encode texts: h for each slot example, computed batch-wise with forward-mode derivatives.

        The encoder's pre-activation for one example is <W_e, ∇_i> + b_e, a directional derivative of that example's
        loss, so a whole batch is encoded in one JVP pass instead of one backward pass per example.

        Args:
            engine: a `GradientEngine` over this model's base model and parameters.
            examples: slot examples (`FeatureExample`s).
            batch_size: examples per JVP pass.
            progress: show a tqdm bar.

        Returns:
            A tensor of shape `(len(examples), latent_size)`.
        """
        from tqdm.auto import tqdm

        if list(engine.params) != list(self.config.param_names):
            raise ParameterSelectionError("The engine differentiates other parameters than this GRADIEND model "
                                          "spans; build it with `GradientEngine(base, tok, model.config.param_names)`.")
        directions = [
            {name: weight[k] for name, weight in zip(self.config.param_names, self.encoder.weights)}
            for k in range(self.config.latent_size)
        ]
        # Similar lengths in one batch waste less compute on padding; the result keeps the input order.
        order = sorted(range(len(examples)), key=lambda i: len(examples[i].text))
        out = torch.empty(len(examples), self.config.latent_size)
        bias = self.encoder.bias.detach().float().cpu()
        starts = range(0, len(examples), batch_size)
        for start in tqdm(starts, desc="encoding", disable=not progress, leave=False):
            rows = order[start: start + batch_size]
            z = engine.directional_derivatives([examples[i] for i in rows], directions, source=self.config.source)
            out[rows] = self._act(z.cpu() + bias)
        return out

    def to_adapter(self, *, h: float | Sequence[float], alpha: float, dial: bool = False,
                   base_model: nn.Module | None = None, description: str | None = None) -> DeltaAdapter:
        """The decoded update α·dec(h) = α·(h·W_d + b_d) as a [`DeltaAdapter`] for the base model.

        Args:
            h: the feature value to decode (e.g. the best point of `search_decoder`; the sign picks the class).
            alpha: the strength (the paper's learning rate α).
            dial: keep the decoder's direction and offset instead of one fixed update, so that h and α stay knobs
                when applying (`adapter.applied(base, h=..., alpha=...)`); one file, a continuous feature dial.
            base_model: the base model, to check the parameters against and record its fingerprint and module types
                (otherwise those recorded at `for_base_model` are used).
            description: one line for the adapter's card.
        """
        names = self.config.param_names
        directions = dict(zip(names, (w.detach() for w in self.decoder.weights)))
        offsets = dict(zip(names, (b.detach() for b in self.decoder.biases)))
        if base_model is not None:
            self.check_base_model(base_model)
            check_fingerprint(base_model, names, self.config.base_model_fingerprint, what="This GRADIEND model",
                              recorded_base=self.config.base_model_name_or_path)
        config = self.config
        feature = {"name": config.feature_name, "classes": list(config.feature_classes),
                   "positive_class": config.positive_class, "targets": dict(config.feature_targets or {})}
        return DeltaAdapter.from_decoder(
            directions, offsets, h=h, alpha=alpha, dial=dial, base_model=base_model,
            base_model_name_or_path=config.base_model_name_or_path, base_model_revision=config.base_model_revision,
            base_model_fingerprint=config.base_model_fingerprint, modules=config.param_modules,
            gradiend_model=self.name_or_path or None, feature=feature, description=description,
        )

    @torch.no_grad()
    def flip_sign(self) -> None:
        """Negate the feature (h -> -h) without changing what any h decodes to; needs an odd activation."""
        for weight in self.encoder.weights:
            weight.neg_()
        self.encoder.bias.neg_()
        for weight in self.decoder.weights:
            weight.neg_()

    def check_base_model(self, base_model: nn.Module) -> dict[str, nn.Parameter]:
        """Return the base parameters this model spans, or fail naming the first one missing or mis-shaped."""
        available = dict(base_model.named_parameters())
        found = {}
        for name, shape in zip(self.config.param_names, self.config.param_shapes):
            if name not in available:
                raise ParameterSelectionError(
                    f"The base model has no parameter `{name}`, which this GRADIEND model spans (base model "
                    f"recorded: {self.config.base_model_name_or_path!r}). Load the base model it was trained on."
                )
            if list(available[name].shape) != list(shape):
                raise ParameterSelectionError(
                    f"Base parameter `{name}` has shape {list(available[name].shape)}, but this GRADIEND model "
                    f"expects {shape}. Load the base model it was trained on "
                    f"({self.config.base_model_name_or_path!r})."
                )
            found[name] = available[name]
        return found


def infer_lm_kind(base_model: nn.Module) -> str:
    """`"masked"` for masked-LM heads (BERT-like), otherwise `"causal"`."""
    names = [type(base_model).__name__, *(getattr(getattr(base_model, "config", None), "architectures", None) or [])]
    return "masked" if any("MaskedLM" in n for n in names) else "causal"


__all__ = [
    "GradiendDecoder",
    "GradiendEncoder",
    "GradiendModel",
    "GradiendOutput",
    "GradiendPreTrainedModel",
    "verify_checkpoint",
]
