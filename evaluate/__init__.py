"""The evaluate stage: how well cloaks protect (identity, fidelity, robustness, transfer, the
equal-visibility frontier) and the report. Above protect, whose cloaks and metrics it reads."""
