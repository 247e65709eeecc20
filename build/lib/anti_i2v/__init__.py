"""anti-i2v: protect photos from image-to-video generation (Anti-I2V, arXiv 2603.24570).

One import namespace over the design card's folders, which stay at the top of the checkout:
`anti_i2v.probe` is `probe/`, `anti_i2v.analyses` is `analyses/`, `anti_i2v.protect` is
`protect/` (pyproject.toml maps them), so no generic name lands in site-packages.
"""
