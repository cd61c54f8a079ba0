"""Weights files: our checkpoints (written atomically, read with weights_only) and ultralytics' / YOLOv5's
(read without running their pickled code, mapped onto our architectures)."""
