"""compute_metrics checked against figures worked out by hand, then against scikit-learn."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training.evaluation import as_probability_matrix, compute_metrics

CLASSES = ["a", "b", "c"]
# Ten images. Rows of the confusion matrix are true classes, columns predicted ones:
#            pred a  pred b  pred c    support
#   true a      2       1       1         4
#   true b      1       2       0         3
#   true c      0       1       2         3
#   column      3       4       3        10
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 2, 1, 1, 0, 2, 2, 1])
HAND_COUNTS = [[2, 1, 1], [1, 2, 0], [0, 1, 2]]

SUPPORT = {"a": 4, "b": 3, "c": 3}
# precision = TP / column total, recall = TP / row total,
# specificity = TN / (TN + FP), where TN + FP = N - support
HAND: dict[str, dict[str, Fraction]] = {
    "a": {"precision": Fraction(2, 3), "recall": Fraction(2, 4), "specificity": Fraction(5, 6)},
    "b": {"precision": Fraction(2, 4), "recall": Fraction(2, 3), "specificity": Fraction(5, 7)},
    "c": {"precision": Fraction(2, 3), "recall": Fraction(2, 3), "specificity": Fraction(6, 7)},
}
# F1 = 2PR / (P + R): a = (2/3)/(7/6) = 4/7, b = (2/3)/(7/6) = 4/7, c = 2/3
HAND_F1 = {"a": Fraction(4, 7), "b": Fraction(4, 7), "c": Fraction(2, 3)}


def one_hot_probabilities(predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """0.6 on the predicted class, the rest shared equally, so that argmax gives ``predicted``."""
    prob = np.full((predicted.size, n_classes), 0.4 / (n_classes - 1))  # (N, C)
    prob[np.arange(predicted.size), predicted] = 0.6
    return prob


@pytest.fixture(scope="module")
def hand_metrics() -> dict:
    return compute_metrics(Y_TRUE, one_hot_probabilities(Y_PRED, 3), CLASSES)


def test_confusion_matrix_and_accuracy_match_the_hand_count(hand_metrics: dict) -> None:
    assert hand_metrics["confusion_matrix"] == {"labels": CLASSES, "counts": HAND_COUNTS}
    assert hand_metrics["n"] == 10
    assert hand_metrics["accuracy"] == pytest.approx(float(Fraction(6, 10)))


def test_per_class_figures_match_the_hand_computation(hand_metrics: dict) -> None:
    for name, expected in HAND.items():
        got = hand_metrics["per_class"][name]
        assert got["precision"] == pytest.approx(float(expected["precision"]))
        assert got["recall"] == pytest.approx(float(expected["recall"]))
        assert got["specificity"] == pytest.approx(float(expected["specificity"]))
        assert got["f1"] == pytest.approx(float(HAND_F1[name]))
        assert got["support"] == SUPPORT[name]


def test_macro_and_weighted_averages_match_the_hand_computation(hand_metrics: dict) -> None:
    weights = {name: Fraction(support, 10) for name, support in SUPPORT.items()}
    for key in ("precision", "recall", "specificity"):
        macro = sum((values[key] for values in HAND.values()), Fraction(0)) / 3
        weighted = sum((values[key] * weights[name] for name, values in HAND.items()), Fraction(0))
        assert hand_metrics["macro"][key] == pytest.approx(float(macro)), key
        assert hand_metrics["weighted"][key] == pytest.approx(float(weighted)), key
    # macro F1 = (4/7 + 4/7 + 2/3) / 3 = 38/63; weighted F1 = 0.4 * 4/7 + 0.3 * 4/7 + 0.3 * 2/3 = 3/5
    assert hand_metrics["macro"]["f1"] == pytest.approx(38 / 63)
    assert hand_metrics["weighted"]["f1"] == pytest.approx(3 / 5)
    # weighted recall is accuracy, by definition
    assert hand_metrics["weighted"]["recall"] == pytest.approx(hand_metrics["accuracy"])


def test_binary_roc_auc_matches_the_pair_count() -> None:
    # positives score 0.35 and 0.8, negatives 0.1 and 0.4: of the 4 (positive, negative) pairs the positive
    # ranks higher in 3 (0.35 > 0.1, 0.8 > 0.1, 0.8 > 0.4), so AUC = 3/4 for either class
    prob_tumour = np.array([0.1, 0.4, 0.35, 0.8])
    metrics = compute_metrics(np.array([0, 0, 1, 1]), prob_tumour, ["no_tumor", "tumor"])
    assert metrics["per_class"]["tumor"]["roc_auc"] == pytest.approx(0.75)
    assert metrics["per_class"]["no_tumor"]["roc_auc"] == pytest.approx(0.75)
    assert metrics["macro"]["roc_auc"] == pytest.approx(0.75)
    # argmax at 0.5: predictions 0, 0, 0, 1 -> one true positive, one false negative
    assert metrics["confusion_matrix"]["counts"] == [[2, 0], [1, 1]]
    assert metrics["per_class"]["tumor"]["recall"] == pytest.approx(0.5)
    assert metrics["per_class"]["tumor"]["specificity"] == pytest.approx(1.0)


def test_roc_auc_counts_a_tie_as_half_a_pair() -> None:
    # positives 0.6, 0.9, 0.1 against negatives 0.2, 0.6: wins 1 + 0.5 (tie), 2, 0 -> 3.5 / 6 = 7/12
    y_true = np.array([0, 0, 1, 1, 1])
    score = np.array([0.2, 0.6, 0.6, 0.9, 0.1])
    metrics = compute_metrics(y_true, np.stack([1 - score, score], axis=1), ["no_tumor", "tumor"])
    assert metrics["per_class"]["tumor"]["roc_auc"] == pytest.approx(7 / 12)


def test_a_sigmoid_column_is_read_as_the_positive_class() -> None:
    score = np.array([0.2, 0.7, 0.9, 0.4])
    y_true = np.array([0, 1, 1, 0])
    stacked = compute_metrics(y_true, np.stack([1 - score, score], axis=1), ["no_tumor", "tumor"])
    assert compute_metrics(y_true, score[:, None], ["no_tumor", "tumor"]) == stacked
    assert compute_metrics(y_true, score, ["no_tumor", "tumor"]) == stacked
    assert as_probability_matrix(score, 2).shape == (4, 2)


@pytest.mark.filterwarnings("error")
def test_a_class_never_predicted_has_precision_zero_without_warnings() -> None:
    classes = ["glioma", "meningioma", "no_tumor", "pituitary"]
    y_true = np.array([0, 1, 2, 3, 3])
    y_pred = np.array([0, 1, 2, 2, 0])  # pituitary is never predicted
    metrics = compute_metrics(y_true, one_hot_probabilities(y_pred, 4), classes)
    pituitary = metrics["per_class"]["pituitary"]
    assert (pituitary["precision"], pituitary["recall"], pituitary["f1"]) == (0.0, 0.0, 0.0)
    assert pituitary["specificity"] == 1.0  # no false positives among the 3 other images
    assert pituitary["support"] == 2


@pytest.mark.filterwarnings("error")
def test_a_class_absent_from_the_labels_has_no_roc_auc() -> None:
    y_true = np.array([0, 0, 1, 1])
    prob = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6]])
    metrics = compute_metrics(y_true, prob, CLASSES)
    absent = metrics["per_class"]["c"]
    assert absent["roc_auc"] is None
    assert absent["support"] == 0
    assert absent["precision"] == 0.0  # one image predicted c, none of them is
    assert "c" not in metrics["roc_curve"]
    defined = [metrics["per_class"][name]["roc_auc"] for name in ("a", "b")]
    assert metrics["macro"]["roc_auc"] == pytest.approx(sum(defined) / 2)
    json.dumps(metrics, allow_nan=False)


def test_roc_auc_agrees_with_scikit_learn_on_random_probabilities() -> None:
    rng = np.random.default_rng(7)
    y_true = np.repeat(np.arange(4), 25)
    logits = rng.normal(size=(100, 4)) + 1.5 * np.eye(4)[y_true]
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    metrics = compute_metrics(y_true, prob, ["glioma", "meningioma", "no_tumor", "pituitary"])
    expected = roc_auc_score(y_true, prob, multi_class="ovr", average="macro")
    assert metrics["macro"]["roc_auc"] == pytest.approx(expected)
    assert metrics["weighted"]["roc_auc"] == pytest.approx(expected)  # balanced classes
    curve = metrics["roc_curve"]["glioma"]
    assert curve["fpr"][0] == 0.0 and curve["tpr"][-1] == 1.0
    json.dumps(metrics, allow_nan=False)


@pytest.mark.parametrize(
    ("y_true", "y_prob", "message"),
    [
        (np.array([0, 1]), np.full((3, 3), 1 / 3), "2 labels but y_prob has 3 rows"),
        (np.array([0, 1]), np.full((2, 4), 0.25), "shape"),
        (np.array([0, 3]), np.full((2, 3), 1 / 3), "outside 0..2"),
        (np.array([], dtype=int), np.zeros((0, 3)), "empty"),
        (np.array([0, 1]), np.array([[np.nan, 0.5, 0.5], [0.2, 0.3, 0.5]]), "NaN"),
    ],
)
def test_bad_inputs_are_refused_with_a_sentence(y_true: np.ndarray, y_prob: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_metrics(y_true, y_prob, CLASSES)
