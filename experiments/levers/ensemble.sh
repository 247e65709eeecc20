#!/bin/bash
# The lever "an ensemble of both mini models" on the 32-portrait equal-visibility frontier (issue
# #13): Anti-I2V cloaks optimised against mini-cogvideox and mini-svd at once, each with its own
# profile (protect --ensemble mini-svd=PROFILE), judged on both models beside the shipped
# Anti-I2V cloaks, paired by photo. After `make report` this reuses its photos, both
# profiles and frontier cloaks and videos; without it, experiments/levers/reuse.sh makes what is needed
# from the shipped profiles. Every step resumes. Every step of an ensemble cloak runs both models. Results: artifacts/reports/levers/ensemble/.
set -e
OUT=${OUT:-out/levers/ensemble}
source experiments/levers/reuse.sh
$B/anti-i2v protect mini-cogvideox $PHOTOS --profile $PROFILE \
  --ensemble mini-svd=$PROFILE_SVD --out out/report/anti-i2v-ens
$B/anti-i2v evaluate mini-cogvideox --clean $PHOTOS --protected out/report/anti-i2v \
  --protected out/report/anti-i2v-ens --models mini-svd --distortions '' --budgets 4,8,16 \
  --profile $PROFILE --profile $PROFILE_SVD --out "$OUT"
