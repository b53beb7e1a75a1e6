"""From noise to latent: schedule, sliding windows, guidance, the predictor, the sampler and its state."""
