"""python -m paper_repro.bench: speed side by side with the baseline, one module per stage measured."""
