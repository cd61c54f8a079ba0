"""PConv-YOLO's library.

Importing it keeps every third-party package we drive off the network, before any of them is imported:
- ultralytics resolves public DNS names on import to learn whether it is online: set offline;
- OpenVINO's converter and nncf send usage telemetry (to Google Analytics) unless the user opted out in a
  file under their home: their telemetry package is made unimportable in this process, which both treat as
  "no telemetry" — nothing on disk changes.
This package is imported before every such import of ours (plots, the predictor's Annotator, export, the
peers in benchmarks/); subprocesses inherit the ultralytics setting.
"""
import os
import sys

os.environ["YOLO_OFFLINE"] = "1"
sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]  # import fails -> their no-op stubs
