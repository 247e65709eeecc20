#!/bin/bash
# The lever "EOT over evaluate's distortions" on the 32-portrait equal-visibility frontier (issue
# #13): Anti-I2V cloaks optimised through JPEG 75, blur and a 50% resize in turn (protect --eot),
# judged beside the shipped Anti-I2V cloaks under those same distortions, paired by photo. After
# `make report` this reuses its photos, profile and frontier cloaks and videos, so only the new
# cloaks are made; without it, experiments/levers/reuse.sh makes what is needed from the shipped profile. Every step resumes. Several hours on 2 CPU cores.
# Results: artifacts/reports/levers/eot/.
set -e
OUT=${OUT:-out/levers/eot}
source experiments/levers/reuse.sh
$B/anti-i2v protect mini-cogvideox $PHOTOS --profile $PROFILE \
  --eot jpeg75,blur,resize50 --out out/report/anti-i2v-eot
$B/anti-i2v evaluate mini-cogvideox --clean $PHOTOS --protected out/report/anti-i2v \
  --protected out/report/anti-i2v-eot --distortions jpeg75,blur,resize50 --budgets 4,8,16 \
  --profile $PROFILE --out "$OUT"
