"""The bottom layer: errors, atomic writes, devices, photos and videos on disk, ranks.

Nothing here knows about models, stages or the shipped artifacts.
"""
