"""probe/: getting inside a video denoiser. Three layers, each importing only the ones above it:

- shared by every stage: `common` (the error, version, devices, safe writes), `images` (photos
  in), `video` (videos out) and `backbones/` (one adapter per diffusers I2V family: blocks,
  conditioning, noise, generation);
- the probe stage itself: `config` (settings, checked), `capture` (nnsight), `store` (zarr),
  `run` (the job) and `cli`;
- `world/`: the mini world (renderer, training, the mini models' and the identity judge's cards).

analyses/ and protect/ import the shared layer and `capture`; nothing here imports them.
"""
