"""The mini world: a testbed beside the model layer (renderer, mini models and judges, cards)."""
