"""Knowledge distillation: a bigger trained teacher's outputs on the same augmented batch as extra targets.

Why: the fastest PConv students lose accuracy that no architecture change has bought back; a teacher's soft
outputs carry more per image than the hard labels (which anchor points are almost objects, how uncertain each
box side is). Two terms, gains from the hyp file (`kd_box`, `kd_cls`, `kd_t`; 0 switches a term off):
- anchor-free student (DetectAF): localization distillation (LD) — KL between the teacher's and the student's
  distribution over each box side's bins (DFL logits, softened by temperature `kd_t`), weighted by the
  teacher's confidence at each anchor point; class KD — Bernoulli KL from the teacher's sigmoid class scores;
- anchor-head student (Detect): box KD — CIoU between the two heads' decoded boxes weighted by the teacher's
  objectness; class KD — Bernoulli KL on objectness everywhere and on class scores where the teacher sees
  objects.
A teacher of the other head kind (an anchor yolov5n.pt teaching an anchor-free student, or the reverse), or one
whose DFL bins or anchor count differ, shares no raw layout with the student; both still predict per grid cell of
the same strides, so the cross-form terms compare what both decode: each cell's box (an anchor head's most
confident anchor) by CIoU weighted by the teacher's confidence, and its per-class confidence (an anchor head's
objectness x class score) by Bernoulli KL.
Both KLs are zero exactly when the student's outputs equal the teacher's. Terms are normalised by the sum of
the teacher's confidence weights, as the task loss normalises by its target scores, so the gains read alike.
A third term, feature imitation (`kd_feat`, off at 0), asks the maps the student's head receives (its neck
outputs), through a 1x1 adapter per level onto the teacher's channels, to correlate with the teacher's: the
Pearson form (PKD), half the mean squared difference of per-channel standardised maps — 0 when perfectly
correlated, about 1 when unrelated — so the teacher's feature scale and the channel counts do not matter. The
adapters train with the student, are saved in last.pt for --resume and dropped from finished checkpoints.
The teacher must predict on the student's levels (strides) and classes; anything else is refused in one line,
naming --teacher. It runs fused, in eval mode, without gradients, and is never saved.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from deploy.errors import UserInputError
from models.yolo import DetectionModel, detection_head
from utils.core.boxes import ciou_loss, xywh_to_xyxy
from utils.core.torch_utils import de_parallel
from utils.weights.checkpoint import float_state_dict, load_model

KD_HYP_DEFAULTS = {"kd_box": 1.0, "kd_cls": 1.0, "kd_feat": 0.0, "kd_t": 2.0}  # for keys a hyp file leaves out
PROB_EPS = 1e-6  # keeps log(p) finite for saturated sigmoids
STD_EPS = 1e-6  # standardising a constant feature map must not divide by zero
ADAPTERS_KEY = "distill_adapters"  # last.pt's entry holding the imitation adapters' weights


def bernoulli_kl(student_logits: torch.Tensor, teacher_prob: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(teacher || student) of independent Bernoullis: BCE(student; teacher) minus the teacher's
    entropy, so it is 0 where the student's probability equals the teacher's (BCE alone never is)."""
    t = teacher_prob.clamp(PROB_EPS, 1 - PROB_EPS)
    entropy = -(t * t.log() + (1 - t) * (1 - t).log())
    return F.binary_cross_entropy_with_logits(student_logits, t, reduction="none") - entropy


def distribution_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(..., bins) logits -> (...) KL(softmax(teacher / T) || softmax(student / T)) x T² (Hinton's scaling keeps
    the gradient's size independent of T)."""
    log_s = F.log_softmax(student_logits / temperature, -1)
    log_t = F.log_softmax(teacher_logits / temperature, -1)
    return (log_t.exp() * (log_t - log_s)).sum(-1) * temperature ** 2


def pearson_imitation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) maps -> half the mean squared difference after standardising each channel over (N, H, W):
    1 - Pearson correlation averaged over channels, so 0 when the maps agree up to a per-channel scale and
    shift, and independent of either side's magnitude."""
    def standardise(x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(0, 1).flatten(1)
        return (x - x.mean(1, keepdim=True)) / (x.std(1, correction=0, keepdim=True) + STD_EPS)

    return F.mse_loss(standardise(student), standardise(teacher)) / 2


class HeadInputs:
    """Keeps the list of maps a detection head received in its model's last forward (a pre-hook)."""

    def __init__(self, head: nn.Module):
        self.maps: list[torch.Tensor] = []
        self.handle = head.register_forward_pre_hook(self._keep)

    def _keep(self, _head: nn.Module, args: tuple) -> None:
        self.maps = list(args[0])


class Adapters(nn.Module):
    """One 1x1 conv per level from the student's head-input channels to the teacher's."""

    def __init__(self, student_channels: list[int], teacher_channels: list[int]):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(s, t, 1) for s, t in zip(student_channels, teacher_channels))

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        return [conv(x) for conv, x in zip(self.convs, maps)]


@torch.no_grad()
def head_input_channels(model: nn.Module) -> list[int]:
    """Channels of each map the model's head receives, from one eval-mode forward of a small blank image (eval
    mode leaves BatchNorm's running statistics untouched)."""
    bare, head = de_parallel(model), detection_head(model)
    seen = HeadInputs(head)
    was_training = bare.training
    size = int(head.stride.max())
    try:
        bare.eval()(torch.zeros(1, bare.yaml["ch"], size, size, device=head.stride.device))
    finally:
        seen.handle.remove()
        bare.train(was_training)
    return [m.shape[1] for m in seen.maps]


def same_layout(teacher: nn.Module, student: nn.Module) -> bool:
    """Whether the two heads' raw maps line up value by value (same kind, DFL bins, anchors per cell): then the
    raw-form terms apply, else the cross-form terms on decoded boxes and confidences."""
    t_head, s_head = detection_head(teacher), detection_head(student)
    anchor_free = de_parallel(student).anchor_free
    if de_parallel(teacher).anchor_free != anchor_free:
        return False
    return t_head.reg_max == s_head.reg_max if anchor_free else t_head.na == s_head.na


def check_teacher(teacher: nn.Module, student: nn.Module, path: str) -> None:
    """Refuse a teacher whose outputs cannot be compared cell by cell with the student's."""
    t_head, s_head = detection_head(teacher), detection_head(student)
    flag = f"--teacher {path}"
    if t_head.nc != s_head.nc:
        raise UserInputError(f"{flag}: the teacher has {t_head.nc} classes, the student {s_head.nc}; "
                             "train the teacher on the same classes")
    t_strides, s_strides = t_head.stride.tolist(), s_head.stride.tolist()
    if t_strides != s_strides:
        raise UserInputError(f"{flag}: the teacher predicts at strides {t_strides}, the student at {s_strides}")


def load_teacher(path: str | Path, student: nn.Module, device: torch.device) -> DetectionModel:
    """The teacher from a checkpoint of ours: fused, eval, frozen, on the student's device."""
    if not Path(path).is_file():
        raise UserInputError(f"--teacher {path}: checkpoint not found")
    teacher = load_model(path, device).fuse().eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    check_teacher(teacher, student, str(path))
    return teacher


class Distiller:
    """distiller(imgs, student_raw) -> (loss x batch size, tensor [kd_box, kd_cls, kd_feat]) to add to the task
    loss. With kd_feat > 0 its adapters train with the student (`trainable_modules` go to the optimizer), and
    `attach` must see the training model once the EMA copy exists (the copy must not carry
    the hook that records the student's head inputs)."""

    def __init__(self, teacher: DetectionModel, student: nn.Module, hyp: dict[str, Any]):
        self.teacher = teacher
        self.head, self.teacher_head = detection_head(student), detection_head(teacher)
        self.anchor_free = de_parallel(student).anchor_free
        self.same_layout = same_layout(teacher, student)
        self.gains = {k: float(hyp.get(k, default)) for k, default in KD_HYP_DEFAULTS.items()}
        self.box_gain, self.cls_gain, self.feat_gain, self.temperature = (
            self.gains[k] for k in ("kd_box", "kd_cls", "kd_feat", "kd_t"))
        if self.temperature <= 0:
            raise UserInputError(f"hyp kd_t {self.temperature}: the distillation temperature must be positive")
        if self.feat_gain < 0:
            raise UserInputError(f"hyp kd_feat {self.feat_gain}: a gain cannot be negative (0 switches it off)")
        self.adapters: nn.Module | None = None
        self.student_inputs = self.teacher_inputs = None
        if self.feat_gain > 0:
            self.adapters = Adapters(head_input_channels(student), head_input_channels(teacher)).to(
                self.head.stride.device)

    def trainable_modules(self) -> list[nn.Module]:
        """What the optimizer must train besides the student: the imitation adapters, if any."""
        return [self.adapters] if self.adapters is not None else []

    def attach(self, student: nn.Module, distribute: Callable[[nn.Module], nn.Module]) -> None:
        """Start recording head inputs (student and teacher) and wrap the adapters as the student is wrapped
        (DDP keeps every rank's adapters equal)."""
        if self.adapters is not None:
            self.student_inputs, self.teacher_inputs = HeadInputs(detection_head(student)), \
                HeadInputs(detection_head(self.teacher))
            self.adapters = distribute(self.adapters)

    def adapter_state(self) -> dict[str, torch.Tensor] | None:
        """The adapters' weights for last.pt (None without imitation)."""
        return None if self.adapters is None else float_state_dict(de_parallel(self.adapters))

    def load_adapter_state(self, ckpt: dict) -> None:
        """--resume: the interrupted run's adapters (a run that had none, or a finished checkpoint, keeps new ones)."""
        if self.adapters is not None and ckpt.get(ADAPTERS_KEY):
            de_parallel(self.adapters).load_state_dict(ckpt[ADAPTERS_KEY])

    @torch.no_grad()
    def teacher_raw(self, imgs: torch.Tensor) -> list[torch.Tensor]:
        """The teacher's raw maps on the batch the student saw (its decode is not needed)."""
        return self.teacher(imgs, raw=True)[1]

    def __call__(self, imgs: torch.Tensor, student_raw: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        teacher_raw = self.teacher_raw(imgs)
        terms = self.cross_form_terms if not self.same_layout else \
            self.anchor_free_terms if self.anchor_free else self.anchor_terms
        losses = terms([s.float() for s in student_raw], [t.float() for t in teacher_raw])
        lbox, lcls = losses[0] * self.box_gain, losses[1] * self.cls_gain
        lfeat = self.imitation_term() * self.feat_gain if self.adapters is not None else torch.zeros_like(lbox)
        return (lbox + lcls + lfeat) * imgs.shape[0], torch.stack((lbox, lcls, lfeat)).detach()

    def imitation_term(self) -> torch.Tensor:
        """Pearson imitation of the teacher's head inputs by the adapted student's, averaged over levels."""
        adapted = self.adapters([m.float() for m in self.student_inputs.maps])
        levels = [pearson_imitation(s, t.float()) for s, t in zip(adapted, self.teacher_inputs.maps)]
        return torch.stack(levels).mean()

    def anchor_free_terms(self, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """LD on the DFL logits weighted by the teacher's best class score; Bernoulli KL on every class score."""
        no, reg_max = self.head.no, self.head.reg_max
        s = torch.cat([r.reshape(r.shape[0], -1, no) for r in student], 1)
        t = torch.cat([r.reshape(r.shape[0], -1, no) for r in teacher], 1)
        s_dist, s_logits = s.split((4 * reg_max, self.head.nc), 2)
        t_dist, t_logits = t.split((4 * reg_max, self.head.nc), 2)
        t_prob = t_logits.sigmoid()
        weight = t_prob.amax(-1)  # (B, N): how sure the teacher is that a point holds an object
        norm = weight.sum().clamp(min=1)
        sides = distribution_kl(s_dist.reshape(*s_dist.shape[:2], 4, reg_max),
                                t_dist.reshape(*t_dist.shape[:2], 4, reg_max), self.temperature).mean(-1)
        return (sides * weight).sum() / norm, bernoulli_kl(s_logits, t_prob).sum() / norm

    def anchor_terms(self, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """CIoU between decoded boxes and class/objectness Bernoulli KL, weighted by the teacher's objectness."""
        nc, lbox, lcls, norm = self.head.nc, 0.0, 0.0, 0.0
        for i, (s, t) in enumerate(zip(student, teacher)):
            t_prob = t[..., 4:].sigmoid()
            obj = t_prob[..., 0]
            stride = self.head.stride[i]
            s_box = xywh_to_xyxy(self.head.decode(i, s)[..., :4] / stride)
            t_box = xywh_to_xyxy(self.head.decode(i, t)[..., :4] / stride)
            flat_obj = obj.reshape(obj.shape[0], -1)
            lbox = lbox + (ciou_loss(s_box.reshape(-1, 4), t_box.reshape(-1, 4)) * flat_obj.reshape(-1)).sum()
            lcls = lcls + bernoulli_kl(s[..., 4], obj).sum()
            if nc > 1:
                lcls = lcls + (bernoulli_kl(s[..., 5:5 + nc], t_prob[..., 1:]).sum(-1) * obj).sum()
            norm = norm + obj.sum()
        norm = norm.clamp(min=1)
        return lbox / norm, lcls / norm

    def cross_form_terms(self, student: list[torch.Tensor], teacher: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Heads of different layouts: CIoU between each cell's decoded boxes and Bernoulli KL between its per-class
        confidences, weighted by the teacher's best confidence in the cell."""
        s_box, s_conf = cell_predictions(self.head, student, self.anchor_free)
        with torch.no_grad():
            t_box, t_conf = cell_predictions(self.teacher_head, teacher, self.teacher.anchor_free)
        weight = t_conf.amax(-1)
        norm = weight.sum().clamp(min=1)
        lbox = (ciou_loss(xywh_to_xyxy(s_box), xywh_to_xyxy(t_box)) * weight).sum()
        return lbox / norm, probability_kl(s_conf, t_conf).sum() / norm


def probability_kl(student_prob: torch.Tensor, teacher_prob: torch.Tensor) -> torch.Tensor:
    """bernoulli_kl for a student known by its probabilities (an anchor head's objectness x class score is a
    product, no single logit): KL(teacher || student) elementwise, 0 where they agree."""
    s, t = student_prob.clamp(PROB_EPS, 1 - PROB_EPS), teacher_prob.clamp(PROB_EPS, 1 - PROB_EPS)
    return t * (t.log() - s.log()) + (1 - t) * (torch.log1p(-t) - torch.log1p(-s))


def cell_predictions(head: nn.Module, raw: list[torch.Tensor], anchor_free: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw maps of either head kind -> one prediction per grid cell of every level, in the order DetectAF decodes
    them: (boxes (B, N, 4) cx, cy, w, h in input pixels, per-class confidences (B, N, nc)). An anchor head's
    cell is its most confident anchor there, with objectness x class score as the confidence."""
    if anchor_free:  # one prediction per cell already; its objectness column is 1
        pred = head.decode(raw)
        return pred[..., :4], pred[..., 5:]
    boxes, confs = [], []
    for i, r in enumerate(raw):
        pred = head.decode(i, r).view(r.shape[0], head.na, -1, head.no)  # (B, na, ny*nx, no)
        conf = pred[..., 5:] * pred[..., 4:5]
        best = conf.amax(-1, keepdim=True).argmax(1, keepdim=True)  # (B, 1, cells, 1): the cell's surest anchor
        boxes.append(pred[..., :4].gather(1, best.expand(-1, -1, -1, 4)).squeeze(1))
        confs.append(conf.gather(1, best.expand(-1, -1, -1, conf.shape[-1])).squeeze(1))
    return torch.cat(boxes, 1), torch.cat(confs, 1)
