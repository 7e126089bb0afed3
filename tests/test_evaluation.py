"""Encoder correlation and plots."""

import json

import numpy as np
import pytest
import torch

from gradiend_hf import GradiendModel, GradientEngine
from gradiend_hf.evaluation import encoder_correlation, pearson, plot_training_curve
from tiny_models import tiny_gender_feature


def test_pearson_matches_numpy():
    torch.manual_seed(0)
    x, y = torch.randn(50), torch.randn(50)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x.numpy(), y.numpy())[0, 1], abs=1e-9)
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert pearson(torch.ones(5), torch.arange(5.0)) == 0.0


def test_encoder_correlation_agrees_with_encoding_each_gradient(llama, bpe):
    feature = tiny_gender_feature()
    model = GradiendModel.for_base_model(llama, params=["model.layers.*.mlp.*"], feature=feature, seed=0)
    engine = GradientEngine(llama, bpe, model.config.param_names)
    examples = feature.test
    result = encoder_correlation(model, engine, examples, batch_size=3)
    slow = torch.stack([model.encode(engine.gradients([e]).source)[0] for e in examples])
    torch.testing.assert_close(result.h, slow.detach(), rtol=1e-4, atol=1e-7)
    assert result.labels.tolist() == [1.0 if e.label == "female" else -1.0 for e in examples]
    assert result.pearson_r == pytest.approx(pearson(slow, result.labels), abs=1e-5)
    assert set(result.mean_h) == {"female", "male"}
    with pytest.raises(ValueError, match="does not know"):
        other = type(examples[0])("He said [MASK] knew.", "she", "he", "robot")
        encoder_correlation(model, engine, [other])


def test_training_curve_png(tmp_path):
    log = tmp_path / "log.jsonl"
    rows = [{"seed": 0, "step": s, "loss": 1.0 / s} for s in range(1, 11)]
    rows[4]["validation_pearson_r"] = -0.5
    rows[9]["validation_pearson_r"] = 0.9
    log.write_text("\n".join(json.dumps(r) for r in rows))
    png = plot_training_curve(log, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
