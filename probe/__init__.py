"""The probe stage: capture every block of a video denoiser into a zarr store.

`config` (settings, checked), `store` (the zarr store, local or at a URL) and `run` (the job,
resumable and sharded under torchrun). It reaches models through `anti_i2v.models` and shares
`anti_i2v.core`; analyses, protect and evaluate sit above it and it imports none of them.
"""
