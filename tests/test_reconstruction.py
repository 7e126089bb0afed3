"""The closed-form MSE gradients equal autograd's, and the trainer's steps equal a plain autograd + AdamW loop."""

import pytest
import torch
from tiny_models import tiny_gender_feature, tiny_llama

from gradiend_hf import GradiendModel, GradiendTrainer, TrainingArguments
from gradiend_hf.reconstruction import reconstruction_gradients


def _random_pair(model, seed=12345):
    generator = torch.Generator().manual_seed(seed)
    shapes = zip(model.config.param_names, model.config.param_shapes)
    pairs = [(name, torch.randn(shape, generator=generator) * 0.5, torch.randn(shape, generator=generator))
             for name, shape in shapes]
    return {n: s for n, s, _ in pairs}, {n: t for n, _, t in pairs}


@pytest.mark.parametrize("activation", ["tanh", "hardtanh", "identity"])
@pytest.mark.parametrize("latent", [1, 2])
def test_gradients_equal_autograd(bpe, activation, latent):
    model = GradiendModel.for_base_model(tiny_llama(len(bpe)), params="paper", seed=0, activation=activation,
                                         latent_size=latent)
    source, target = _random_pair(model)
    output = model(source, target)
    output.loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=False)  # stale values in the buffers must be overwritten, not added to
    for p in model.parameters():
        p.grad.fill_(123.0)
    loss = reconstruction_gradients(model, source, target)
    assert loss == pytest.approx(float(output.loss.detach()), rel=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-5, atol=1e-7, msg=name)
        assert p.grad.abs().max() > 0, name  # the check above is not vacuous


def test_trainer_steps_equal_an_autograd_loop(bpe):
    feature = tiny_gender_feature()
    base = tiny_llama(len(bpe))
    args = TrainingArguments(max_steps=5, eval_steps=5, batch_size=4, learning_rate=1e-2, progress_bar=False)
    model = GradiendModel.for_base_model(base, params=["model.layers.*.mlp.*"], feature=feature, seed=0)
    reference = GradiendModel.for_base_model(base, params=["model.layers.*.mlp.*"], feature=feature, seed=0)
    trainer = GradiendTrainer(model, base, bpe, feature, args)
    optimizer = trainer._optimizer()
    plain = torch.optim.AdamW(reference.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay,
                              foreach=False)
    for step in range(1, 6):
        _, batch = trainer.batch_for_step(0, step)
        loss = trainer.training_step(optimizer, batch)
        pair = trainer.engine.gradients(batch, source=reference.config.source)
        output = reference(pair.source, pair.target)
        output.loss.backward()
        plain.step()
        plain.zero_grad(set_to_none=True)
        assert loss == pytest.approx(float(output.loss.detach()), rel=1e-5)
    changed = False
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
        changed |= not torch.equal(q, GradiendModel.for_base_model(base, params=["model.layers.*.mlp.*"],
                                                                    feature=feature, seed=0).state_dict()[name])
    assert changed  # five steps moved the weights
