"""anti-i2v: protect photos from image-to-video generation (Anti-I2V, arXiv 2603.24570).

One import namespace over the top-level folders, one a layer (pyproject.toml maps them):
`anti_i2v.core`, `.models`, `.world`, `.probe`, `.analyses`, `.protect`, `.evaluate`,
`.experiments`, and here `plan`, `api`, `reports`, `commands` and `cli`. The stages are callable from Python with the CLI's typed configs,
through `anti_i2v.api` (imported on its own, so that `import anti_i2v.cli` stays free of torch):

    from anti_i2v import api
    api.probe(api.ProbeConfig(model="tiny:cogvideox", images=("photos",), out="a.zarr"))
"""
