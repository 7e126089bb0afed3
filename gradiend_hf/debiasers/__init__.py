"""The debiasing methods of the GRADIEND paper's comparison, each fitted from feature data into an adapter.

Projections of the final hidden states (representation adapters): `fit_inlp`, `fit_sentence_debias`, `fit_leace`
(through the concept-erasure package) and `fit_rlace`, fitted on counterfactual pairs of the feature's training
texts (never on benchmark data). An output-level adapter: `self_debias`. Weight changes (delta adapters):
`train_cda` and `train_dropout`. `fit_data` computes the states once, to share between the projections.
"""

from .cda import pretraining_texts, train_cda
from .counterfactual import GENDER_WORD_PAIRS, swap_words, two_sided, word_pairs_for
from .dropout import raised_dropout, train_dropout
from .fitting import DEFAULT_MAX_PAIRS, FitData, fit_data, pooled_states
from .inlp import fit_inlp, inlp_projection
from .leace import fit_leace, leace_affine
from .linear_probe import LinearProbe, majority_rate, probe_accuracy, train_linear_probe
from .pairs import MIN_PAIRS, CounterfactualPairs, counterfactual_pairs
from .pretraining import PretrainingArguments, further_pretrain
from .rlace import fantope_projection, fit_rlace, rlace_projection
from .self_debias import DEBIASING_PREFIXES, self_debias
from .sentence_debias import bias_subspace, fit_sentence_debias

__all__ = [
    "DEBIASING_PREFIXES",
    "DEFAULT_MAX_PAIRS",
    "GENDER_WORD_PAIRS",
    "MIN_PAIRS",
    "CounterfactualPairs",
    "FitData",
    "LinearProbe",
    "PretrainingArguments",
    "bias_subspace",
    "counterfactual_pairs",
    "fantope_projection",
    "fit_data",
    "fit_inlp",
    "fit_leace",
    "fit_rlace",
    "fit_sentence_debias",
    "further_pretrain",
    "inlp_projection",
    "leace_affine",
    "majority_rate",
    "pooled_states",
    "pretraining_texts",
    "probe_accuracy",
    "raised_dropout",
    "rlace_projection",
    "self_debias",
    "swap_words",
    "train_cda",
    "train_dropout",
    "train_linear_probe",
    "two_sided",
    "word_pairs_for",
]
