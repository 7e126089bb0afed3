"""The memory model: its GRADIEND and optimiser terms equal what a real trainer holds; its device counts behave."""

import pytest
import torch

from gradiend_hf import GradiendModel, GradiendTrainer, TrainingArguments, devices_needed, training_memory
from tiny_models import tiny_gender_feature

GIB = 1024 ** 3


def _held_bytes(model, optimizer) -> tuple[int, int]:
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    moments = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values() if v.dim() > 0)
    return weights, moments


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradiend_and_optimizer_terms_equal_a_trainers_tensors(llama, bpe, dtype):
    feature = tiny_gender_feature()
    model = GradiendModel.for_base_model(llama, params=["model.layers.*.mlp.*"], feature=feature, dtype=dtype)
    trainer = GradiendTrainer(model, llama, bpe, feature, TrainingArguments(batch_size=4, progress_bar=False))
    optimizer = trainer._optimizer()
    trainer.training_step(optimizer, trainer.batch_for_step(0, 1)[1])
    weights, moments = _held_bytes(model, optimizer)
    n = model.config.num_selected
    estimate = training_memory(n, base_parameters=sum(p.numel() for p in llama.parameters()),
                               weight_dtype=str(dtype).removeprefix("torch."), base_dtype="float32")
    # 3n + 1 weights (the encoder bias is one number) and 6n + 2 moments: the model counts 3n and 6n
    assert weights - estimate.gradiend_weights == model.encoder.bias.numel() * model.encoder.bias.element_size()
    assert moments - estimate.optimizer_state == 2 * model.encoder.bias.numel() * model.encoder.bias.element_size()
    assert estimate.base_model == sum(p.numel() * 4 for p in llama.parameters())


def test_fsdp_splits_only_the_gradiend_side():
    one = training_memory(268_000_000, base_parameters=268_000_000, processes=1)
    four = training_memory(268_000_000, base_parameters=268_000_000, processes=4)
    replicated = training_memory(268_000_000, base_parameters=268_000_000, processes=4, fsdp=False)
    assert four.gradiend_weights == one.gradiend_weights // 4 and four.optimizer_state == one.optimizer_state // 4
    assert four.base_model == one.base_model and four.base_gradients == one.base_gradients
    assert replicated.total == one.total
    # 36 bytes per selected weight in fp32 (3 weights + 6 moments), 18 in bf16
    assert one.gradiend_weights + one.optimizer_state == 36 * 268_000_000
    bf16 = training_memory(268_000_000, base_parameters=0, weight_dtype="bfloat16")
    assert bf16.gradiend_weights + bf16.optimizer_state == 18 * 268_000_000


def test_devices_needed_for_a_3b_all_parameter_gradiend():
    n = 3_212_749_824  # Llama-3.2-3B
    fp32 = devices_needed(n, base_parameters=n)
    bf16 = devices_needed(n, base_parameters=n, weight_dtype="bfloat16")
    assert fp32 is not None and bf16 is not None and bf16 < fp32
    assert training_memory(n, base_parameters=n, processes=fp32).total <= 80 * GIB
    assert training_memory(n, base_parameters=n, processes=fp32 - 1).total > 80 * GIB
    assert devices_needed(n, base_parameters=n, fsdp=False) is None  # 115 GB of GRADIEND state in each process


def test_bad_input_is_refused_with_what_was_expected():
    with pytest.raises(ValueError, match="processes >= 1"):
        training_memory(10, base_parameters=10, processes=0)
    with pytest.raises(ValueError, match="weight_dtype"):
        training_memory(10, base_parameters=10, weight_dtype="int8")
