"""Stage 7: contributor reward weights, exact to the part per million."""
