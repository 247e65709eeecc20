#!/bin/bash
# The lever "IRA on the VAE encoder" on the 32-portrait equal-visibility frontier (issue #13):
# a profile with VAE anchors (adapt --vae), Anti-I2V cloaks made with it, and evaluate --budgets
# beside the shipped Anti-I2V cloaks, paired by photo. After `make report` this reuses its
# photos, masks, profile and frontier cloaks and videos, so only the new cloaks are made; without
# it, experiments/levers/reuse.sh makes what is needed from the shipped profiles. Every step resumes. About 1.5 h on 2 CPU cores. Results: artifacts/reports/levers/vae-ira/.
set -e
OUT=${OUT:-out/levers/vae-ira}
source experiments/levers/reuse.sh
$B/anti-i2v adapt mini-cogvideox $PHOTOS --masks out/report/world --vae --out out/report/adapt-vae
$B/anti-i2v protect mini-cogvideox $PHOTOS --profile out/report/adapt-vae/profile.json \
  --out out/report/anti-i2v-vae
$B/anti-i2v evaluate mini-cogvideox --clean $PHOTOS --protected out/report/anti-i2v \
  --protected vae=out/report/anti-i2v-vae --distortions '' --budgets 4,8,16 \
  --profile $PROFILE --profile out/report/adapt-vae/profile.json --out "$OUT"
