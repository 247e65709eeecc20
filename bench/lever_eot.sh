#!/bin/bash
# The lever "EOT over evaluate's distortions" on the 32-portrait equal-visibility frontier (issue
# #13): Anti-I2V cloaks optimised through JPEG 75, blur and a 50% resize in turn (protect --eot),
# judged beside the shipped Anti-I2V cloaks under those same distortions, paired by photo. Run
# `make report` first: this reuses its photos, profile and (copied) frontier cloaks and videos,
# so only the new cloaks are made. Every step resumes. Several hours on 2 CPU cores.
# Results: artifacts/reports/levers/eot/.
set -e
B=${B:-.venv/bin}
OUT=${OUT:-out/levers/eot}
source bench/lever_reuse.sh
$B/anti-i2v protect mini-cogvideox out/report/photos --profile out/report/adapt/profile.json \
  --eot jpeg75,blur,resize50 --out out/report/anti-i2v-eot
$B/anti-i2v evaluate mini-cogvideox --clean out/report/photos --protected out/report/anti-i2v \
  --protected out/report/anti-i2v-eot --distortions jpeg75,blur,resize50 --budgets 4,8,16 \
  --profile out/report/adapt/profile.json --out "$OUT"
