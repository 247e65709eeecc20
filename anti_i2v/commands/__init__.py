"""The `anti-i2v` commands, one module a stage: parse and check arguments, then call the stage.

The top layer with `anti_i2v.cli` and `anti_i2v.plan`: commands may import any stage.
"""
