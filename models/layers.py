"""Layer names: which of a store's or a profile's layers are the VAE encoder's.

Kept free of torch so that the commands can read rule and config defaults without importing a
model library (`anti-i2v --help` answers at once).
"""

from __future__ import annotations

VAE_PREFIX = "vae."


def is_vae_layer(name: str) -> bool:
    """Whether a layer name is a VAE encoder block (`Backbone.vae_block_names`)."""
    return name.startswith(VAE_PREFIX)


def split_vae_layers(layers: list[str]) -> tuple[list[str], list[str]]:
    """(denoiser blocks, VAE encoder blocks) of a layer list, each in its given order."""
    return [n for n in layers if not is_vae_layer(n)], [n for n in layers if is_vae_layer(n)]
