"""Evaluation of generated talking videos (lip sync, identity, text control, seams, drift).

`metrics` holds the measures (shared with later issues); `evaluate` generates held-out videos with
the library's sampler and scores them (CLI: python -m training.eval.evaluate).
"""
