"""Open-Sora 1.2, written here from its architecture facts (no upstream code): the STDiT3
denoiser, the video VAE (SDXL-layout 2D VAE plus the causal temporal VAE) and the pipeline.

Module and parameter names follow the official checkpoints, so their state dicts load without a
key map; `shared/models/opensora-1.2-*-keys.txt` is the test data that keeps them equal.
"""
