#!/bin/bash
# The lever "an ensemble of both mini models" on the 32-portrait equal-visibility frontier (issue
# #13): Anti-I2V cloaks optimised against mini-cogvideox and mini-svd at once, each with its own
# profile (protect --ensemble mini-svd=PROFILE), judged on both models beside the shipped
# Anti-I2V cloaks, paired by photo. Run `make report` first: this reuses its photos, both
# profiles and (copied) frontier cloaks and videos. Every step resumes. Many hours on 2 CPU cores
# (every step runs both models). Results: artifacts/reports/levers/ensemble/.
set -e
B=${B:-.venv/bin}
OUT=${OUT:-out/levers/ensemble}
source bench/lever_reuse.sh
$B/anti-i2v protect mini-cogvideox out/report/photos --profile out/report/adapt/profile.json \
  --ensemble mini-svd=out/report/adapt-svd/profile.json --out out/report/anti-i2v-ens
$B/anti-i2v evaluate mini-cogvideox --clean out/report/photos --protected out/report/anti-i2v \
  --protected out/report/anti-i2v-ens --models mini-svd --distortions '' --budgets 4,8,16 \
  --profile out/report/adapt/profile.json --profile out/report/adapt-svd/profile.json --out "$OUT"
