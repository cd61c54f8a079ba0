"""PConv-YOLO's library.

Importing it sets ultralytics offline before anything of ours can import ultralytics: on import,
ultralytics resolves public DNS names to learn whether it is online, and nothing of ours may touch the
network. This package is imported before every ultralytics import of ours (plots, the predictor's
Annotator, the peers in benchmarks/) and its subprocesses inherit the setting.
"""
import os

os.environ["YOLO_OFFLINE"] = "1"
