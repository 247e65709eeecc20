#!/bin/bash
# The lever "IRA on the VAE encoder" on the 32-portrait equal-visibility frontier (issue #13):
# a profile with VAE anchors (adapt --vae), Anti-I2V cloaks made with it, and evaluate --budgets
# beside the shipped Anti-I2V cloaks, paired by photo. Run `make report` first: this reuses its
# photos, masks, profile and (copied) frontier cloaks and videos, so only the new cloaks are made.
# Every step resumes. About 1.5 h on 2 CPU cores. Results: artifacts/reports/levers/vae-ira/.
set -e
B=${B:-.venv/bin}
OUT=${OUT:-out/levers/vae-ira}
source bench/lever_reuse.sh
$B/anti-i2v adapt mini-cogvideox out/report/photos --masks out/report/world --vae --out out/report/adapt-vae
$B/anti-i2v protect mini-cogvideox out/report/photos --profile out/report/adapt-vae/profile.json \
  --out out/report/anti-i2v-vae
$B/anti-i2v evaluate mini-cogvideox --clean out/report/photos --protected out/report/anti-i2v \
  --protected vae=out/report/anti-i2v-vae --distortions '' --budgets 4,8,16 \
  --profile out/report/adapt/profile.json --profile out/report/adapt-vae/profile.json --out "$OUT"
