"""What the project ships for a newcomer's first run: the demo model, the data it was trained on and
sample media. The CLIs default to these, as yolov5's default to yolov5s.pt and coco128, but offline."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO_WEIGHTS = ROOT / "data/demo/yolov5n-fasterneck-af-person.pt"  # how it was made: data/demo/README.md
DEMO_DATA = ROOT / "data/coco128-person.yaml"
SAMPLES = ROOT / "data/samples.txt"  # two images and a short video
