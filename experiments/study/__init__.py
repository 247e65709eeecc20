"""`anti-i2v study`: does the cloak protect, and do the probed layers matter, on this model?

One pre-registered experiment, on any backbone the toolkit loads:
- `config`: the settings and the arms (torch-free: the CLI checks them at once);
- `protocol`: the split, arms, budgets, seeds, comparisons and hashes, fixed before the first cloak;
- `cost`: time and memory per arm, predicted from one measured step;
- `run`: the stages (layers on selection photos, cloaks, videos), each resuming;
- `stats`: per-portrait read-offs, the nested bootstrap, Holm, the permutation rank;
- `analysis`: evaluate's rows to the typed `StudyReport`;
- `report`: report.json, README.md, portraits.csv and the frontier figure.
"""
