# Sourced by the bench/lever_*.sh scripts: start $OUT from `make report`'s frontier, so the
# shipped Anti-I2V cloaks at every budget and their generated videos are reused, not re-made.
mkdir -p "$OUT/.cloaks"
[ -d "$OUT/.cloaks/anti-i2v" ] || cp -r out/report/eval/.cloaks/anti-i2v "$OUT/.cloaks/"
[ -d "$OUT/.videos" ] || cp -r out/report/eval/.videos "$OUT/"
