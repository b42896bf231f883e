"""Stage 3: the training window as train / dev / holdout, and the metrics learned from it."""
