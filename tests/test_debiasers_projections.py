"""INLP, R-LACE, SentenceDebias and LEACE on problems with known answers, and fitted on a tiny LM into adapters."""

import numpy as np
import pytest
import torch

from gradiend_hf.adapters import RepresentationAdapter
from gradiend_hf.debiasers import (
    bias_subspace,
    fantope_projection,
    fit_data,
    fit_inlp,
    fit_leace,
    fit_rlace,
    fit_sentence_debias,
    inlp_projection,
    leace_affine,
    majority_rate,
    probe_accuracy,
    rlace_projection,
)
from tiny_models import tiny_gender_feature, tiny_llama

N, D = 2000, 16


def _classes(seed=0, shift=1.5, directions=1, classes=2):
    """Isotropic Gaussian classes whose means differ along `directions` orthonormal directions (offset off zero)."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(D, directions, generator=generator))
    y = torch.randint(0, classes, (N,), generator=generator)
    angles = torch.arange(classes) * 2 * torch.pi / classes  # classes on a circle (a line for two)
    plane = torch.stack([angles.cos(), angles.sin()], dim=1)[:, :directions]
    centres = shift * plane @ basis.T
    return torch.randn(N, D, generator=generator) + centres[y] + 3.0, y, basis


@pytest.mark.parametrize("classes,directions", [(2, 1), (3, 2)])
def test_inlp_drives_a_linear_probe_to_chance(classes, directions):
    x, y, basis = _classes(classes=classes, directions=directions)
    chance = majority_rate(y)
    assert probe_accuracy(x, y) > chance + 0.3
    projection, info = inlp_projection(x, y)
    assert probe_accuracy(x @ projection, y) <= chance + 0.03  # a fresh probe, trained and scored on the fitted data
    assert info["removed_rank"] >= directions and max(info["dev_accuracies"][-2:]) <= info["chance"] + 0.01
    torch.testing.assert_close(projection @ projection, projection, rtol=0, atol=1e-5)  # a projection
    assert (basis.T @ projection).norm() < 0.2  # the concept's directions are (nearly) gone: 0.10 for 3 classes


def test_fantope_projection_lands_in_the_fantope():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(8, 8, generator=generator)
    point = fantope_projection(a + a.T, 2)
    values = torch.linalg.eigvalsh(point)
    assert values.min() >= -1e-5 and values.max() <= 1 + 1e-5 and abs(float(values.sum()) - 2) < 1e-4
    inside = torch.diag(torch.tensor([1.0, 1.0, 0, 0, 0, 0, 0, 0]))
    torch.testing.assert_close(fantope_projection(inside, 2), inside, rtol=0, atol=1e-5)  # a fixed point


def test_rlace_finds_the_known_optimum_and_drives_a_probe_to_chance():
    x, y, basis = _classes()
    projection, info = rlace_projection(x, y, rank=1)
    removed = torch.linalg.eigh(torch.eye(D) - projection)[1][:, -1]
    assert abs(float(removed @ basis[:, 0])) > 0.98  # the optimum removes exactly the mean-difference direction
    assert probe_accuracy(x @ projection, y) <= majority_rate(y) + 0.05  # measured: 0.535 vs chance 0.507
    assert info["removed_rank"] == 1


def test_sentence_debias_subspace_equals_pca():
    generator = torch.Generator().manual_seed(0)
    first = torch.randn(50, D, generator=generator) * torch.linspace(0.1, 2, D)
    second = torch.randn(50, D, generator=generator)
    subspace = bias_subspace(first, second, rank=3)
    half = ((first - second) / 2).double().numpy()
    centred = np.concatenate([half, -half])
    centred = centred - centred.mean(0)  # what a PCA does first
    _, vectors = np.linalg.eigh(centred.T @ centred / (len(centred) - 1))
    reference = torch.from_numpy(vectors[:, ::-1][:, :3].copy()).float()  # top-3 principal axes
    torch.testing.assert_close(subspace.T @ subspace, reference @ reference.T, rtol=0, atol=1e-5)


def test_leace_affine_equals_concept_erasures_eraser():
    from concept_erasure import LeaceEraser

    x, y, _ = _classes()
    x = x * torch.linspace(0.5, 2.0, D)  # correlated, anisotropic: LEACE's whitening matters
    weight, bias = leace_affine(x, y)
    eraser = LeaceEraser.fit(x.double(), y.double()[:, None])
    torch.testing.assert_close(x @ weight.T + bias, eraser(x.double()).float(), rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_fit(bpe):
    model = tiny_llama(len(bpe))
    feature = tiny_gender_feature()
    return model, feature, fit_data(model, bpe, feature, neutral=40)


@pytest.mark.parametrize("fit", [fit_inlp, fit_sentence_debias, fit_leace, fit_rlace])
def test_each_method_fits_an_adapter_on_a_tiny_lm(fit, tiny_fit, bpe, tmp_path):
    model, feature, data = tiny_fit
    adapter = fit(model, bpe, feature, data=data, **({"iterations": 200} if fit is fit_rlace else {}))
    fitted = adapter.config.fit
    assert isinstance(adapter, RepresentationAdapter) and adapter.config.feature["name"] == "gender"
    assert fitted["pairs"] == 40 and fitted["probe_accuracy_before"] > fitted["probe_chance"]
    # INLP iterates until probes are at chance and LEACE guarantees it; one orthogonal direction (SentenceDebias's PCA
    # axis, R-LACE at rank 1) need not remove everything a probe uses when the class signal is spread out
    if fit in (fit_inlp, fit_leace):
        # 16 held-out texts (the tiny feature has 40 pairs): one probe's accuracy there varies by ±0.125 at chance
        assert fitted["probe_accuracy_after"] <= fitted["probe_chance"] + 0.25
        assert fitted["probe_accuracy_after"] < fitted["probe_accuracy_before"]
    if fit is fit_rlace:
        assert fitted["removed_rank"] == 1 and 0 <= fitted["dev_accuracy"] <= 1
    loaded = RepresentationAdapter.from_pretrained(adapter.save_pretrained(tmp_path / adapter.config.method))
    assert loaded.config == adapter.config


def test_a_masked_lm_is_fitted_the_same_way(bert, wordpiece):
    feature = tiny_gender_feature()
    adapter = fit_inlp(bert, wordpiece, feature, max_pairs=40)
    fitted = adapter.config.fit
    assert fitted["pairs"] == 40 and fitted["neutral_texts"] == 500 and fitted["with_neutral"]
    assert fitted["probe_accuracy_after"] <= fitted["probe_chance"] + 0.25  # 16 held-out texts: see above
    assert fitted["probe_accuracy_after"] < fitted["probe_accuracy_before"]
    batch = wordpiece(["Mary said that [MASK] would come."], return_tensors="pt")
    with torch.no_grad():
        before = bert(**batch).logits
        with adapter.applied(bert):
            assert not torch.allclose(bert(**batch).logits, before)
        assert torch.equal(bert(**batch).logits, before)
