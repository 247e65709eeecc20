"""DynamiCrafter (512 and 1024), written here from its architecture facts (no upstream code): the
3D UNet, the image Resampler, the OpenCLIP ViT-H-14 image tower and the pipeline.

Module and parameter names follow the official `model.ckpt` (after its prefixes), so its state
dict loads without a key map; `shared/models/dynamicrafter-unet-resampler-keys.txt` is the test
data that keeps them equal.
"""
