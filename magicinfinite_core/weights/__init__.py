"""Weight files: the bundle format, transformer and VAE checkpoint layouts, key maps, LoRA."""
