"""Binary deepfake-detection metrics (0 = real, 1 = fake) as one local `evaluate` module.

Loaded by path, so it works offline: `dfd.tools.metrics.load_dfd_metrics()`, an `evaluate.load` of this folder. The
Hub's canonical metrics (`evaluate.load("accuracy")`, ...) are downloaded at load time and fail without internet.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)


_DESCRIPTION = """
Metrics of a binary video deepfake detector (label 0 = real, 1 = fake, "fake" is the positive class):
accuracy, balanced accuracy, recall of each class (the share of real videos called real and of fake videos called
fake), F1 of the fake class and macro F1, and three threshold-free scores computed from the fake probability:
ROC AUC, average precision and the equal error rate (EER).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[int]`): predicted labels (0 = real, 1 = fake), e.g. the argmax of the logits.
    references (`list[int]`): true labels.
    prediction_scores (`list[float]`): the probability (or any increasing score) that the video is fake.

Returns:
    accuracy, balanced_accuracy, recall_real, recall_fake, f1 (fake class), f1_macro, roc_auc, average_precision,
    eer (`float` each). The threshold-free scores (roc_auc, average_precision, eer) need both classes among the
    references; with one class they are NaN, as is the recall of an absent class.

Examples:
    >>> from dfd.tools.metrics import load_dfd_metrics
    >>> metric = load_dfd_metrics()
    >>> results = metric.compute(predictions=[0, 1, 1], references=[0, 1, 0], prediction_scores=[0.2, 0.9, 0.6])
    >>> results["accuracy"], results["roc_auc"]
    (0.6666666666666666, 1.0)
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DFDMetrics(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int64"),
                    "references": datasets.Value("int64"),
                    "prediction_scores": datasets.Value("float64"),
                }
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html"],
        )

    def _compute(self, predictions, references, prediction_scores):
        predictions, references = np.asarray(predictions), np.asarray(references)
        scores = np.asarray(prediction_scores, dtype=np.float64)
        recall_real, recall_fake = recall_score(
            references, predictions, labels=[0, 1], average=None, zero_division=np.nan
        )
        both_classes = len(np.unique(references)) == 2
        results = {
            "accuracy": accuracy_score(references, predictions),
            "balanced_accuracy": balanced_accuracy_score(references, predictions),
            "recall_real": recall_real,
            "recall_fake": recall_fake,
            "f1": f1_score(references, predictions, labels=[0, 1], pos_label=1, zero_division=0.0),
            "f1_macro": f1_score(references, predictions, labels=[0, 1], average="macro", zero_division=0.0),
            "roc_auc": roc_auc_score(references, scores) if both_classes else np.nan,
            "average_precision": average_precision_score(references, scores) if both_classes else np.nan,
            "eer": equal_error_rate(references, scores) if both_classes else np.nan,
        }
        return {name: float(value) for name, value in results.items()}


def equal_error_rate(references, scores):
    """
    The error rate where the false-positive rate (real called fake) equals the false-negative rate (fake called
    real): where the ROC curve, linearly interpolated between its points, crosses the line FPR = 1 - TPR.
    """
    fpr, tpr, _ = roc_curve(references, scores, pos_label=1)
    # Along the curve FPR rises and FNR = 1 - TPR falls: the gap goes from +1 (at (0, 0)) to -1 (at (1, 1)).
    gap = (1.0 - tpr) - fpr
    crossing = int(np.argmax(gap <= 0))
    if gap[crossing] == 0:
        return fpr[crossing]
    fraction = gap[crossing - 1] / (gap[crossing - 1] - gap[crossing])
    return fpr[crossing - 1] + fraction * (fpr[crossing] - fpr[crossing - 1])
