"""Stage 5: scoring baseline and candidate on the same held-out examples; DeltaOne, exactly."""
