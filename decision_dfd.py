"""The decision rule stored with a model, and the calibration that training fits for it.

`DecisionRule` turns a video's windows' calibrated fake probabilities into a verdict; every surface applies it (the
pipeline, `dfd predict`, the Endpoint, the web page). `calibrate` fits what the rule reads from the config: the
temperature that calibrates a window's probability, the threshold at a target false-positive rate, and the normal fit
of real windows' log-odds that raises the threshold for videos of several windows.
"""

import math
import statistics
from dataclasses import dataclass

import numpy as np


FAKE_LABEL = "fake"
DEFAULT_THRESHOLD = 0.5


def logit(probability: float) -> float:
    return math.log(probability) - math.log1p(-probability)


def sigmoid(log_odds):
    """The probability of `log_odds` (a number or an array), computed without overflow."""
    log_odds = np.asarray(log_odds, dtype=np.float64)
    probability = np.exp(-np.logaddexp(0.0, -log_odds))
    return float(probability) if probability.ndim == 0 else probability


@dataclass(frozen=True)
class Decision:
    """A video's verdict: `fake` when `score` reaches `threshold`; `flagged` lists the windows that reach it."""

    fake: bool
    score: float
    threshold: float
    flagged: list[int]


@dataclass(frozen=True)
class DecisionRule:
    """
    The decision rule stored with a model (its config's `decision_threshold`, `decision_top_k`, `real_log_odds`).

    A video's score is the mean fake probability of its `top_k` most suspicious windows (1: its top window, so a short
    fake stretch is not averaged away by the real rest). It is fake when the score reaches the threshold for its
    number of windows: `threshold` for one window; for n windows, the threshold at which a real video of n windows
    has the false-alarm chance that a one-window real video has at `threshold` (see `threshold_for`).
    """

    threshold: float = DEFAULT_THRESHOLD
    top_k: int = 1
    real_log_odds: dict | None = None

    @classmethod
    def from_config(cls, config, threshold: float | None = None) -> "DecisionRule":
        """The config's rule; `threshold` (e.g. `dfd predict --threshold`) replaces its stored threshold."""
        if threshold is not None and not 0 < threshold < 1:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
        stored = getattr(config, "decision_threshold", None)
        return cls(
            threshold=threshold if threshold is not None else stored if stored is not None else DEFAULT_THRESHOLD,
            top_k=getattr(config, "decision_top_k", 1),
            real_log_odds=getattr(config, "real_log_odds", None),
        )

    @property
    def name(self) -> str:
        """The rule in words, as results report it."""
        return "top window" if self.top_k == 1 else f"mean of the top {self.top_k} windows"

    def threshold_for(self, num_windows: int) -> float:
        """
        The threshold a video of `num_windows` windows is held to. Each window of a real video is a chance of a false
        alarm: with a per-window false-positive rate p at `threshold` (from a normal fit of real windows' log-odds),
        n windows get the per-window rate 1 - (1 - p) ** (1 / n), so that the per-video rate stays p. Windows of one
        video are positively correlated, which makes this conservative. The top-k mean never exceeds the top window,
        so the bound holds for every k.
        """
        if num_windows <= 1 or not self.real_log_odds or not self.real_log_odds.get("std"):
            return self.threshold
        mean, std = self.real_log_odds["mean"], self.real_log_odds["std"]
        standard = statistics.NormalDist()
        per_window = standard.cdf(-(logit(self.threshold) - mean) / std)
        if not 0 < per_window < 1:
            return self.threshold
        per_window = -math.expm1(math.log1p(-per_window) / num_windows)
        if per_window <= 0:
            return self.threshold
        return max(self.threshold, sigmoid(mean - std * standard.inv_cdf(per_window)))

    def decide(self, fake_probabilities) -> Decision:
        """The verdict on a video from its windows' (calibrated) fake probabilities, in time order."""
        fake = np.asarray(fake_probabilities, dtype=np.float64)
        threshold = self.threshold_for(len(fake))
        score = float(np.sort(fake)[-self.top_k :].mean())
        flagged = [int(index) for index in np.flatnonzero(fake >= threshold)]
        return Decision(score >= threshold, score, threshold, flagged)


# Calibration, fitted by training on the validation videos (each one window, its frames spread over it).

ECE_BINS = 15
# Temperatures searched, log-spaced.
TEMPERATURES = np.geomspace(0.01, 100, 801)
# The threshold's log-odds are kept where float32 probabilities still tell them apart from 0 and 1.
MAX_THRESHOLD_LOG_ODDS = 15.0
# Folds of the cross-validation that decides whether temperature scaling helps on videos it was not fitted on.
CALIBRATION_FOLDS = 5


def expected_calibration_error(labels, fake_probabilities, bins: int = ECE_BINS) -> float:
    """
    ECE: over equal-width bins of the predicted class's probability, the gap between that confidence and the
    accuracy, weighted by the share of videos in the bin.
    """
    fake_probabilities = np.asarray(fake_probabilities, dtype=np.float64)
    predictions = (fake_probabilities >= 0.5).astype(np.int64)
    confidence = np.where(predictions == 1, fake_probabilities, 1 - fake_probabilities)
    correct = predictions == np.asarray(labels)
    bin_of = np.minimum(((confidence - 0.5) * 2 * bins).astype(np.int64), bins - 1)  # confidence lies in [0.5, 1]
    error = 0.0
    for index in range(bins):
        members = bin_of == index
        if members.any():
            error += members.mean() * abs(confidence[members].mean() - correct[members].mean())
    return float(error)


def negative_log_likelihood(labels, log_odds) -> float:
    """Mean cross-entropy of the fake log-odds against the labels (0 = real, 1 = fake)."""
    labels, log_odds = np.asarray(labels), np.asarray(log_odds, dtype=np.float64)
    return float(np.where(labels == 1, np.logaddexp(0, -log_odds), np.logaddexp(0, log_odds)).mean())


def fit_temperature(labels, log_odds) -> float:
    """
    Temperature scaling (Guo et al., 2017): the temperature whose scaled log-odds minimise the cross-entropy, against
    Platt's (1999) targets (n_fake + 1) / (n_fake + 2) and 1 / (n_real + 2) rather than 1 and 0: a validation set
    that the model separates perfectly would otherwise drive the temperature to 0 and every probability to 0 or 1, a
    certainty that a finite set cannot show.
    """
    labels = np.asarray(labels)
    log_odds = np.asarray(log_odds, dtype=np.float64)
    num_fake, num_real = int((labels == 1).sum()), int((labels == 0).sum())
    targets = np.where(labels == 1, (num_fake + 1) / (num_fake + 2), 1 / (num_real + 2))
    scaled = log_odds[None, :] / TEMPERATURES[:, None]
    losses = (targets * np.logaddexp(0, -scaled) + (1 - targets) * np.logaddexp(0, scaled)).mean(axis=1)
    return float(TEMPERATURES[int(np.argmin(losses))])


def held_out_temperature_gain(labels, log_odds, folds: int = CALIBRATION_FOLDS, seed: int = 0) -> float | None:
    """
    How much temperature scaling lowers the NLL of videos it was not fitted on: each fold is scored at the
    temperature fitted on the other folds, against the uncalibrated log-odds (positive: it helps). `None` when the
    set is too small to hold out folds that keep both classes in their fitting part.
    """
    labels = np.asarray(labels)
    log_odds = np.asarray(log_odds, dtype=np.float64)
    folds = min(folds, int((labels == 0).sum()), int((labels == 1).sum()))
    if folds < 2:
        return None
    order = np.random.default_rng(seed).permutation(len(labels))
    # Stratified: each class dealt round-robin over the folds, so every fold's complement holds both classes.
    fold_of = np.empty(len(labels), dtype=np.int64)
    for label in (0, 1):
        members = order[labels[order] == label]
        fold_of[members] = np.arange(len(members)) % folds
    calibrated = np.empty(len(labels))
    for fold in range(folds):
        held_out = fold_of == fold
        temperature = fit_temperature(labels[~held_out], log_odds[~held_out])
        calibrated[held_out] = log_odds[held_out] / temperature
    return negative_log_likelihood(labels, log_odds) - negative_log_likelihood(labels, calibrated)


def empirical_threshold(log_odds, real, target_false_positive_rate: float) -> float:
    """The lowest log-odds threshold that calls at most that share of the real videos fake: halfway from the highest
    real video it must pass to the next validation score above it (or 1 above it, when none is)."""
    allowed = int(target_false_positive_rate * len(real))  # real videos that may reach the threshold
    passed = np.sort(real)[-(allowed + 1)]
    above = log_odds[log_odds > passed]
    return float((passed + above.min()) / 2) if len(above) else float(passed + 1)


def rates_at_threshold(labels, log_odds, threshold_log_odds: float) -> dict:
    labels = np.asarray(labels)
    flagged = np.asarray(log_odds) >= threshold_log_odds
    rates = {"false_positive_rate": float(flagged[labels == 0].mean()) if (labels == 0).any() else math.nan}
    rates["true_positive_rate"] = float(flagged[labels == 1].mean()) if (labels == 1).any() else math.nan
    return rates


def eer_threshold(labels, log_odds) -> dict:
    """The threshold (calibrated probability) where the false-positive rate first reaches the false-negative rate."""
    labels, log_odds = np.asarray(labels), np.asarray(log_odds, dtype=np.float64)
    candidates = np.unique(log_odds)[::-1]  # from the strictest threshold down
    real, fake = np.sort(log_odds[labels == 0]), np.sort(log_odds[labels == 1])
    # As sklearn's roc_curve computes them: the shares of real and of fake videos at or above each threshold.
    false_positive = (len(real) - np.searchsorted(real, candidates, side="left")) / len(real)
    false_negative = 1 - (len(fake) - np.searchsorted(fake, candidates, side="left")) / len(fake)
    crossing = int(np.argmax(false_positive >= false_negative))
    return {"eer_threshold": sigmoid(np.clip(candidates[crossing], -50, 50))}


def calibrate(labels, log_odds, target_false_positive_rate: float) -> dict:
    """
    Calibration of the validation videos' scores, each video one window (its frames spread evenly over it, as in
    training). The temperature makes window probabilities calibrated, and is kept only when it lowers the NLL of
    videos it was not fitted on (cross-validated, see `held_out_temperature_gain`; else 1, and `temperature_kept`
    says so). The threshold is where a normal fit of real windows' calibrated log-odds puts
    `target_false_positive_rate` (a smooth quantile, which also gives `DecisionRule.threshold_for` its correction
    for videos of several windows), raised if needed so that the real validation videos' own false-positive rate
    stays within the target. Returns the figures for metrics.json; `config` holds the fields the export stores, and
    `notes` what a log should tell.
    """
    labels = np.asarray(labels)
    log_odds = np.asarray(log_odds, dtype=np.float64)
    both_classes = len(np.unique(labels)) == 2
    gain = held_out_temperature_gain(labels, log_odds) if both_classes else None
    fitted = fit_temperature(labels, log_odds) if both_classes else 1.0
    temperature = fitted if gain is not None and gain > 0 else 1.0
    calibrated = log_odds / temperature
    real = calibrated[labels == 0]
    results = {
        "temperature": temperature,
        "fitted_temperature": fitted,
        "temperature_kept": temperature != 1.0,
        "held_out_nll_gain": gain,
        "ece_before": expected_calibration_error(labels, sigmoid(log_odds)),
        "ece_after": expected_calibration_error(labels, sigmoid(calibrated)),
        "target_false_positive_rate": target_false_positive_rate,
        "real_videos": int((labels == 0).sum()),
        "fake_videos": int((labels == 1).sum()),
        "notes": [],
    }
    if both_classes and temperature == 1.0:
        results["notes"].append(
            f"temperature scaling (fitted {fitted:.3f}) did not lower the held-out NLL of the validation videos "
            "(cross-validated): temperature 1 is kept"
            if gain is not None
            else "too few validation videos of each class to check temperature scaling on held-out videos: "
            "temperature 1 is kept"
        )
    config = {"calibration_temperature": temperature}
    if len(real) >= 2 and real.std(ddof=1) > 0:
        mean, std = float(real.mean()), float(real.std(ddof=1))
        quantile = mean + std * statistics.NormalDist().inv_cdf(1 - target_false_positive_rate)
        quantile = max(quantile, empirical_threshold(calibrated, real, target_false_positive_rate))
        threshold_log_odds = float(np.clip(quantile, -MAX_THRESHOLD_LOG_ODDS, MAX_THRESHOLD_LOG_ODDS))
        threshold = sigmoid(threshold_log_odds)
        config.update(decision_threshold=threshold, real_log_odds={"mean": mean, "std": std})
        results.update(threshold=threshold, real_log_odds={"mean": mean, "std": std})
        results.update(rates_at_threshold(labels, calibrated, threshold_log_odds))
    else:
        results["notes"].append(
            "fewer than 2 distinct real validation videos: no decision threshold is calibrated (0.5 stays)"
        )
    if both_classes:
        results.update(eer_threshold(labels, calibrated))
    results["config"] = config
    return results


__all__ = ["DEFAULT_THRESHOLD", "FAKE_LABEL", "Decision", "DecisionRule", "calibrate", "logit", "sigmoid"]
