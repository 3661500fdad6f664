"""Kept for its import path only: benchmarks/quality (run_grid.py, grid_measures.py, zoo_lr_check.py) import
`test_rows`, `predict` and `score` from here, and a grid started before the move imports them lazily. The code
lives in talklora_hub.evaluation.scoring (scoring whole test splits) and talklora_hub.train.evaluate.predict_labels
(one prediction per example); new code imports from there."""

from ..evaluation.scoring import score, test_rows  # noqa: F401  (re-exported)
from ..train.evaluate import predict_labels as predict  # noqa: F401  (re-exported under its old name)
