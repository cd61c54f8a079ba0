"""What one validation returns (`val.run`): metrics by name, so a caller never depends on where a value sits in a
tuple, and the one fitness rule that picks best.pt."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from utils.metrics.ap import APResult

# results.csv's metric columns (yolov5's names), in the order of ValResult.csv_row()
CSV_COLUMNS = ("metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "val/box_loss",
               "val/obj_loss", "val/cls_loss")


@dataclass(frozen=True, eq=False)  # eq off: the maps array has no single truth value to compare by
class ValResult:
    """Metrics over all classes, the mean val losses, per-class mAP50-95 and ms per image of each stage."""

    precision: float  # mean over classes with labels, at the confidence of max mean F1
    recall: float
    map50: float
    map50_95: float
    losses: tuple[float, float, float]  # box, obj, cls: mean per batch (zeros without compute_loss)
    maps: np.ndarray  # (nc,) mAP50-95 per class; classes without labels get the overall map50_95
    times: tuple[float, float, float]  # pre-process, inference, NMS

    @classmethod
    def from_ap(cls, ap: APResult, nc: int, losses: tuple[float, float, float],
                times: tuple[float, float, float]) -> ValResult:
        """Summarise ap_per_class's result over `nc` classes; the losses and times are val's own."""
        maps = np.zeros(nc) + ap.map
        maps[ap.classes] = ap.ap50_95
        return cls(ap.mp, ap.mr, ap.map50, ap.map, losses, maps, times)

    @classmethod
    def zeros(cls) -> ValResult:
        """Before any validation (--noval epochs): the zeros results.csv logs, a fitness no epoch can fall below."""
        return cls(0.0, 0.0, 0.0, 0.0, (0.0, 0.0, 0.0), np.zeros(0), (0.0, 0.0, 0.0))

    def fitness(self) -> float:
        """best.pt selection (yolov5's rule): 0.1·mAP50 + 0.9·mAP50-95, mostly the stricter metric."""
        return 0.1 * self.map50 + 0.9 * self.map50_95

    def csv_row(self) -> tuple[float, ...]:
        """The values of CSV_COLUMNS: what results.csv and evolve.csv log for this validation."""
        return (self.precision, self.recall, self.map50, self.map50_95, *self.losses)
