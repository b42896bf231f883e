"""Stage 8: EAS attestations, Merkle trees and their verification; no MLflow, no DSPy."""
