"""Stage 1: reading production traces from MLflow, and the helper apps log them with."""
