# Sourced by the experiments/levers/*.sh scripts. With `make report`'s outputs present, start $OUT from its
# frontier, so the shipped Anti-I2V cloaks at every budget and their generated videos are reused,
# not re-made. Without them (a fresh machine), make what the levers need from what is shipped: the
# report's 32 held-out portraits (rendered again: the renderer is deterministic), its Anti-I2V
# cloaks (protect with the shipped profile, the one `adapt` chose on those portraits), and the
# mini-svd profile; evaluate then re-makes the frontier's cloaks and videos itself.
# Sets PHOTOS, PROFILE and PROFILE_SVD for the script that sources it.
B=${B:-.venv/bin}
R=out/report
mkdir -p "$OUT/.cloaks"
if [ -d $R/eval/.cloaks/anti-i2v ]; then
  [ -d "$OUT/.cloaks/anti-i2v" ] || cp -r $R/eval/.cloaks/anti-i2v "$OUT/.cloaks/"
  [ -d "$OUT/.videos" ] || cp -r $R/eval/.videos "$OUT/"
fi
[ -d $R/photos ] || $B/anti-i2v world render --out $R/world --count 32 --seed 7 --photos $R/photos
PHOTOS=$R/photos
PROFILE=$R/adapt/profile.json
[ -f $PROFILE ] || PROFILE=artifacts/profiles/mini-cogvideox.json
PROFILE_SVD=$R/adapt-svd/profile.json
[ -f $PROFILE_SVD ] || PROFILE_SVD=artifacts/profiles/mini-svd.json
$B/anti-i2v protect mini-cogvideox $PHOTOS --profile $PROFILE --out $R/anti-i2v
