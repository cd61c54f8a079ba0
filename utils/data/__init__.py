"""Data: dataset YAMLs, label checks and cache, augmentation, samplers, image/video/stream sources."""
