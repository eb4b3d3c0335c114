"""
The local evaluate module dfd.tools.metrics.dfd_metrics, loaded from the package as training loads it, checked against
scikit-learn (and SciPy for the EER) and by hand.
"""

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn import metrics as sk

import dfd
from dfd.tools.metrics import DFD_METRICS_DIR, load_dfd_metrics


@pytest.fixture(scope="module")
def dfd_metrics():
    # A path, not a Hub name: works offline (conftest sets HF_HUB_OFFLINE=1).
    return load_dfd_metrics(keep_in_memory=True)


def test_module_is_loaded_from_inside_the_package(dfd_metrics):
    """Wherever `dfd` is installed, its metrics come with it (not from a folder beside the training script)."""
    assert DFD_METRICS_DIR.is_relative_to(Path(dfd.__file__).resolve().parent)
    assert (DFD_METRICS_DIR / "dfd_metrics.py").is_file()
    assert dfd_metrics.name == "dfd_metrics"


def random_case(seed, size=200, fake_share=0.8, decimals=None):
    rng = np.random.default_rng(seed)
    references = (rng.random(size) < fake_share).astype(int)
    scores = np.clip(0.5 + 0.25 * (2 * references - 1) + rng.normal(0, 0.3, size), 0, 1)
    if decimals is not None:
        scores = np.round(scores, decimals)  # ties between real and fake videos: diagonal ROC segments
    return references, scores, (scores >= 0.5).astype(int)


def eer_with_scipy(references, scores):
    """The usual EER recipe: where the interpolated ROC curve meets TPR = 1 - FPR."""
    fpr, tpr, _ = sk.roc_curve(references, scores)
    return brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)


@pytest.mark.parametrize("seed, decimals", [(0, None), (1, None), (2, 1), (3, 2)])
def test_matches_scikit_learn(dfd_metrics, seed, decimals):
    references, scores, predictions = random_case(seed, decimals=decimals)
    results = dfd_metrics.compute(predictions=predictions, references=references, prediction_scores=scores)

    recall_real, recall_fake = sk.recall_score(references, predictions, average=None)
    expected = {
        "accuracy": sk.accuracy_score(references, predictions),
        "balanced_accuracy": sk.balanced_accuracy_score(references, predictions),
        "recall_real": recall_real,
        "recall_fake": recall_fake,
        "f1": sk.f1_score(references, predictions),
        "f1_macro": sk.f1_score(references, predictions, average="macro"),
        "roc_auc": sk.roc_auc_score(references, scores),
        "average_precision": sk.average_precision_score(references, scores),
        "eer": eer_with_scipy(references, scores),
    }
    assert results.keys() == expected.keys()
    for name, value in expected.items():
        assert results[name] == pytest.approx(value, abs=1e-9), name


def test_hand_computed_case(dfd_metrics):
    # real: 0.1, 0.6 -- fake: 0.4, 0.9. ROC: (0, 0) -> (0, .5) -> (.5, .5) -> (.5, 1) -> (1, 1).
    results = dfd_metrics.compute(
        predictions=[0, 1, 0, 1], references=[0, 0, 1, 1], prediction_scores=[0.1, 0.6, 0.4, 0.9]
    )
    assert results["accuracy"] == 0.5
    assert results["recall_real"] == 0.5 and results["recall_fake"] == 0.5
    assert results["roc_auc"] == 0.75
    assert results["eer"] == 0.5  # at threshold 0.6: one real of two above, one fake of two below


def test_hand_computed_unbalanced_case(dfd_metrics):
    # 4 real, 2 fake. ROC AUC is the share of (fake, real) pairs where the fake scores higher, a tie counting half:
    # fake 0.4 beats 0.1 and 0.2, ties 0.4 and loses to 0.7 (2.5 of 4), fake 0.8 beats all four: 6.5 / 8.
    # Balanced accuracy is the mean of the recalls, real 3/4 and fake 1/2: 5/8, where plain accuracy is 4/6.
    results = dfd_metrics.compute(
        predictions=[0, 0, 0, 1, 0, 1],
        references=[0, 0, 0, 0, 1, 1],
        prediction_scores=[0.1, 0.2, 0.4, 0.7, 0.4, 0.8],
    )
    assert results["roc_auc"] == pytest.approx(6.5 / 8)
    assert results["balanced_accuracy"] == pytest.approx(5 / 8)
    assert results["accuracy"] == pytest.approx(4 / 6)
    assert results["recall_real"] == pytest.approx(3 / 4) and results["recall_fake"] == pytest.approx(1 / 2)


@pytest.mark.parametrize(
    "scores, eer",
    [
        ([0.1, 0.2, 0.8, 0.9], 0.0),  # separable
        ([0.9, 0.8, 0.2, 0.1], 1.0),  # inverted
        ([0.5, 0.5, 0.5, 0.5], 0.5),  # all tied: the diagonal segment crosses at its middle
    ],
)
def test_eer_extremes(dfd_metrics, scores, eer):
    results = dfd_metrics.compute(predictions=[0, 0, 1, 1], references=[0, 0, 1, 1], prediction_scores=scores)
    assert results["eer"] == pytest.approx(eer)


def test_one_class_gives_nan_for_undefined_scores(dfd_metrics):
    results = dfd_metrics.compute(predictions=[1, 1, 0], references=[1, 1, 1], prediction_scores=[0.9, 0.7, 0.2])
    assert results["accuracy"] == pytest.approx(2 / 3)
    assert results["recall_fake"] == pytest.approx(2 / 3)
    for name in ("recall_real", "roc_auc", "average_precision", "eer"):
        assert math.isnan(results[name]), name


def test_batches_accumulate_like_one_call(dfd_metrics):
    references, scores, predictions = random_case(4, size=50)
    for start in range(0, 50, 16):  # an uneven last batch
        dfd_metrics.add_batch(
            predictions=predictions[start : start + 16],
            references=references[start : start + 16],
            prediction_scores=scores[start : start + 16],
        )
    batched = dfd_metrics.compute()
    at_once = dfd_metrics.compute(predictions=predictions, references=references, prediction_scores=scores)
    assert batched == at_once
