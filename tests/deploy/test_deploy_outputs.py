"""deploy/outputs.py, the one writer of run outputs for detect.py and the runner: file names from any source, and
labels plus predictions.csv from the runner's own Detections."""
import csv

import numpy as np
import pytest

from deploy.detector import Detections
from deploy.outputs import ResultWriter, safe_stem
from deploy.sources import Frame


@pytest.mark.parametrize("source, stem", [
    ("data/images/bus.jpg", "bus"), ("0", "0"), ("shots/a b [1].png", "a_b_1"),
    ("rtsp://cam.example.com:554/live.sdp?token=secret#x", "live"),  # no query or fragment
    ("http://cam.example.com/", "cam.example.com"),  # no path: the host, rather than a generic name
    ("rtsp://admin:pw@10.0.0.7", "10.0.0.7"),  # never the credentials
    ("https://[::1]/", "1"), ("???", "stream")])
def test_safe_stem(source, stem):
    assert safe_stem(source) == stem


def test_labels_and_csv_from_runner_detections(tmp_path):
    image = np.zeros((100, 200, 3), np.uint8)
    result = Detections(image, np.array([[10, 20, 50, 60]], np.float32), np.array([0.9], np.float32),
                        np.array([1]), ("person", "car"))
    writer = ResultWriter(tmp_path, save_txt=True, save_conf=True, save_csv=True)
    for index in (1, 2):
        writer.write(Frame("rtsp://u:p@cam.example.com/live", image, index, "", "stream", fps=5.0), result, image)
    writer.close()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["live.mp4", "live_1.txt", "live_2.txt",
                                                                         "predictions.csv"]
    assert (tmp_path / "labels/live_1.txt").read_text() == "1 0.15 0.4 0.2 0.4 0.9\n"
    with open(tmp_path / "predictions.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["Image Name", "Prediction", "Confidence", "Frame", "x1", "y1", "x2", "y2"],
                    ["live", "car", "0.9000", "1", "10.0", "20.0", "50.0", "60.0"],
                    ["live", "car", "0.9000", "2", "10.0", "20.0", "50.0", "60.0"]]
