"""Efficacy experiments, on top of the stages: does the cloak protect, and do the layers matter?

The first-class one is `study` (`anti-i2v study`, docs/study.md): one pre-registered answer to
"does the cloak protect, and do the probed layers matter?" on any model. `judge_calibration`
checks the dlib judge on real faces.

The earlier experiments, whose shipped reports stay in artifacts/reports/: each is a module run as `python -m anti_i2v.experiments.NAME` (its docstring says
what it measures and how to rerun it) and a function a test runs on a tiny model:
- `layer_ablation`: the profile's layers against random, inverted and last-block picks, paired;
- `layer_pilot`: a causal rule (anchor the blocks whose pilot cloak removes most identity),
  tested against the same ablation;
- `levers`: the paper's levers (EOT, an ensemble, IRA on the VAE) beside plain Anti-I2V;
- `protect_gate`, `analyses_gate`: the first same-budget efficacy and analysis-validity gates;
- `variants`: the layer picks an ablation compares.
They read evaluate's results through its typed rows (`EvalRow.read_csv`) and use its statistics
(`per_photo`, `paired_difference`); speed benchmarks stay in bench/.
"""
