"""How well a cloak protects: metrics, distortions, and the evaluation report."""
