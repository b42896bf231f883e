"""Stage 4: recompiling a program with a teleprompter, and checking the prompts it produced."""
