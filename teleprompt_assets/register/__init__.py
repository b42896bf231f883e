"""Stage 6: MLflow model versions with lineage, promotion, rollback and serving."""
