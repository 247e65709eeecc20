"""The model layer: family adapters (`backbones`), block capture, memory, and the registry of
shipped models. Every stage reaches a video model through it.
"""
