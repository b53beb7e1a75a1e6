"""Inputs on their way to the model: audio loading and features, portraits, speaker masks, encoders."""
