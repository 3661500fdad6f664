"""Honest numbers: confidence intervals for accuracies and the baselines every zoo entry is measured against.

intervals: Wilson intervals for one accuracy, paired bootstrap intervals for a difference of two
classifiers scored on the same examples. baselines: majority class, TF-IDF + logistic regression,
and the zero-shot base model, each on a task's whole test split.
"""

from .intervals import Accuracy, accuracy_with_interval, paired_difference, wilson_interval

__all__ = ["Accuracy", "accuracy_with_interval", "paired_difference", "wilson_interval"]
