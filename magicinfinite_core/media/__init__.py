"""From latent to file: the autoencoders, streamed decoding and video writing."""
