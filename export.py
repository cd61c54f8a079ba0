"""Export a trained checkpoint to ONNX, TFLite, OpenVINO (each also int8) and TorchScript, then verify the files.

Usage (yolov5's flags):
    python export.py --weights runs/train/exp/weights/best.pt --include onnx tflite torchscript
    python export.py --weights best.pt --include onnx --dynamic --simplify --opset 17
    python export.py --weights best.pt --include tflite --half --int8 --data data/coco8.yaml --imgsz 320
    python export.py --weights best.pt --include onnx openvino --int8 --data data/coco8.yaml  # + int8 files
    python export.py --weights best.pt --include onnx --nms          # post-NMS rows (B, topk_all, 6)

Files go beside the checkpoint (runs/train/exp/weights/best.onnx next to best.pt, as yolov5 writes them);
--project/--name choose a run folder instead (runs/export/exp, exp2, ...). An existing file is never replaced
without --exist-ok. After export every file is checked: raw outputs against PyTorch on the same letterboxed
real images (max abs / max rel difference), CPU latency, and with --data its val mAP50-95 beside the .pt's.
A summary table closes the run.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # allow `python /path/to/export.py` from anywhere
    sys.path.append(str(ROOT))

import torch  # noqa: E402

from deploy.errors import UserInputError  # noqa: E402
from utils.core.assets import DEMO_WEIGHTS  # noqa: E402
from utils.core.cli import run_cli  # noqa: E402
from utils.data.dataset import check_dataset, create_dataloader  # noqa: E402
from utils.infer.backends import Backend, load_backend  # noqa: E402
from utils.weights.checkpoint import DEFAULT_IMGSZ, checkpoint_imgsz, load_checkpoint, model_from_checkpoint  # noqa: E402
from utils.infer.exporters import (ExportedFile, calibration_batches, check_writable_dir,  # noqa: E402
                                   export_metadata, prepare_for_export, written_files)
from utils.infer.formats import (EXPORT_FORMATS, FORMATS, INT8_FORMATS, ExportFormat, ExportSettings,  # noqa: E402
                                 export_format)
from deploy.imgsz import round_imgsz  # noqa: E402
from utils.infer.verify import (Reference, file_row, file_size_mb, format_table, parity_batches,  # noqa: E402
                                pytorch_row)
from deploy.outputs import increment_path  # noqa: E402
from utils.core.log import LOGGER  # noqa: E402
from utils.core.torch_utils import select_device  # noqa: E402

ONNX_OPSETS = range(11, 22)
DEFAULT_PROJECT = ROOT / "runs/export"  # only with --project or --name: by default files go beside --weights


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Export a PConv-YOLO checkpoint and verify the exported files")
    p.add_argument("--weights", type=str, default=str(DEMO_WEIGHTS), help="checkpoint .pt to export (default: the demo)")
    p.add_argument("--include", nargs="+", default=["torchscript"],
                   help=f"formats: {', '.join(FORMATS)} (--int8 adds a file to {', '.join(INT8_FORMATS)})")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=None,
                   help="image (h, w) (default: the size the checkpoint was trained at, else 640)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size baked into the exported files")
    p.add_argument("--device", default="cpu", help="cuda device, i.e. 0 or cpu")
    p.add_argument("--half", action="store_true", help="FP16: ONNX/TorchScript on CUDA; an extra fp16 .tflite")
    p.add_argument("--int8", action="store_true",
                   help="an extra int8 file per ONNX / TFLite / OpenVINO format, calibrated on --data train images")
    p.add_argument("--data", type=str, default=None, help="data YAML: int8 calibration images and val mAP")
    p.add_argument("--dynamic", action="store_true", help="ONNX: dynamic batch, height and width")
    p.add_argument("--simplify", action="store_true", help="ONNX: simplify with onnxslim")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    p.add_argument("--nms", action="store_true", help="put NMS in the graph: output (B, topk_all, 6)")
    p.add_argument("--topk-all", type=int, default=100, help="--nms: rows (detections) per image")
    p.add_argument("--iou-thres", type=float, default=0.45, help="--nms: IoU threshold")
    p.add_argument("--conf-thres", type=float, default=0.25, help="--nms: confidence threshold")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip the checks after export")
    p.add_argument("--project", default=None,
                   help=f"save to project/name instead of beside --weights (default project: {DEFAULT_PROJECT})")
    p.add_argument("--name", default=None, help="save to project/name (default name: exp)")
    p.add_argument("--exist-ok", action="store_true",
                   help="replace exported files that already exist; existing project/name ok, do not increment")
    return p.parse_args(argv)


def check_options(opt: argparse.Namespace) -> None:
    """Every flag problem becomes a one-line UserInputError before any work starts."""
    include = [str(f).lower().lstrip(".") for f in opt.include]
    unknown = [f for f in include if f not in FORMATS]
    if unknown or not include:
        raise UserInputError(f"--include {' '.join(map(str, opt.include))}: unknown format(s) "
                             f"{', '.join(unknown) or '(none given)'}; choose from {', '.join(FORMATS)}")
    opt.include = list(dict.fromkeys(include))
    if not opt.weights:
        raise UserInputError("--weights: give the checkpoint (.pt) to export")
    if Path(opt.weights).suffix.lower() != ".pt":
        raise UserInputError(f"--weights {opt.weights}: export reads a .pt checkpoint "
                             f"(got '{Path(opt.weights).suffix}')")
    if not Path(opt.weights).is_file():
        raise UserInputError(f"--weights {opt.weights}: file not found")
    if opt.int8 and not opt.data:
        raise UserInputError("--int8: needs --data (a data YAML whose train images calibrate the quantization)")
    if opt.int8 and not set(INT8_FORMATS) & set(opt.include):
        raise UserInputError(f"--int8: applies to {', '.join(INT8_FORMATS)}; add one of them to --include")
    if opt.batch_size < 1:
        raise UserInputError(f"--batch-size {opt.batch_size}: must be 1 or more")
    if opt.opset not in ONNX_OPSETS:
        raise UserInputError(f"--opset {opt.opset}: choose {ONNX_OPSETS.start}..{ONNX_OPSETS.stop - 1}")
    if opt.nms and opt.dynamic:
        raise UserInputError("--nms: not supported with --dynamic (the in-graph NMS has fixed shapes)")
    if opt.topk_all < 1:
        raise UserInputError(f"--topk-all {opt.topk_all}: must be 1 or more")
    for flag, value in (("--conf-thres", opt.conf_thres), ("--iou-thres", opt.iou_thres)):
        if not 0 <= value <= 1:
            raise UserInputError(f"{flag} {value}: must be between 0 and 1")
    if opt.data and not Path(opt.data).is_file():
        raise UserInputError(f"--data {opt.data}: file not found")
    for fmt in EXPORT_FORMATS:
        if fmt.name in opt.include and fmt.requires is not None:
            fmt.requires(opt.int8)


def output_folder(opt: argparse.Namespace) -> Path:
    """Beside --weights, where yolov5 and ultralytics write best.onnx and users' scripts look for it; a run
    folder project/name (incremented unless --exist-ok) only when either flag is given."""
    if opt.project is None and opt.name is None:
        return check_writable_dir(Path(opt.weights).parent, "weights", "pass --project to write elsewhere")
    return check_writable_dir(increment_path(Path(opt.project or DEFAULT_PROJECT) / (opt.name or "exp"),
                                             exist_ok=opt.exist_ok))


def output_files(opt: argparse.Namespace, folder: Path) -> dict[str, Path]:
    """{ExportedFile.label: path} for everything --include (with --half / --int8) asks for."""
    stem, extra = Path(opt.weights).stem, {"fp16": opt.half, "int8": opt.int8}
    return {fmt.label(precision): fmt.file(folder, stem, precision) for fmt in EXPORT_FORMATS if fmt.name in opt.include
            for precision in ("fp32", *(p for p in fmt.precisions if extra[p]))}


def refuse_to_overwrite(files: dict[str, Path], exist_ok: bool) -> None:
    """A second export must not silently replace a best.onnx that a user's script or device already uses."""
    if exist_ok:
        return
    for path in files.values():
        for written in written_files(path):
            if written.exists():
                raise UserInputError(f"{written}: already exists; pass --exist-ok to replace it, or --project/--name "
                                     f"to write to a run folder instead")


def export_all(opt: argparse.Namespace, model: torch.nn.Module, im: torch.Tensor, targets: dict[str, Path],
               data: dict | None) -> list[ExportedFile]:
    """Every file of `targets`, traced or converted from the export-form `model` on the dummy input `im`."""
    settings = ExportSettings(opt.opset, opt.dynamic, opt.simplify,
                              calibration_batches(data, opt.imgsz, opt.batch_size) if opt.int8 else None)
    if "tflite" in targets and opt.dynamic:
        LOGGER.warning("WARNING: --dynamic applies to ONNX only; the .tflite files have a fixed input size")
    files = []
    for fmt in EXPORT_FORMATS:
        outputs = precisions_of(fmt.name, targets)
        if outputs:
            files += export_one(opt, fmt, model, im, outputs, settings)
    return files


def export_one(opt: argparse.Namespace, fmt: ExportFormat, model: torch.nn.Module, im: torch.Tensor,
               outputs: dict[str, Path], settings: ExportSettings) -> list[ExportedFile]:
    """One format's files ({precision: path} in `outputs`): a converted format from the model in fp32 on the CPU
    (what litert and OpenVINO's CPU plugin take), a traced one on the export device in the input's dtype."""
    if fmt.converted:
        model, im = model.float().cpu(), im.float().cpu()
    base = "fp16" if im.dtype == torch.float16 else "fp32"
    meta = export_metadata(model, opt.imgsz, opt.batch_size, base, opt.nms)
    written = fmt.export(model, im, outputs, meta, settings)
    return [ExportedFile(fmt.name, path, base if precision == "fp32" else precision)
            for precision, path in written.items()]


def precisions_of(fmt: str, targets: dict[str, Path]) -> dict[str, Path]:
    """{precision: path} of one format's targets ('tflite' -> fp32, 'tflite int8' -> int8)."""
    return {label[len(fmt) + 1:] or "fp32": path for label, path in targets.items() if label.split()[0] == fmt}


def square_val_map(opt: argparse.Namespace, model: torch.nn.Module, data: dict) -> float:
    """mAP50-95 of the PyTorch model on square letterboxed val images — the input fixed-size exports get."""
    import val

    loader = create_dataloader(data["val"], opt.imgsz[0], opt.batch_size, int(max(model.stride)), pad=0.0,
                               rect=False, workers=2, prefix="val: ", nc=int(data["nc"]))[0]
    return val.run(data=data, model=model, dataloader=loader, plots=False).map50_95


def file_map(opt: argparse.Namespace, path: Path, data: dict, half: bool = False) -> float:
    """val mAP50-95 of one file (`half`: as val --half runs it); val's run folder is only a by-product here, so
    it lives in a temporary folder instead of beside the user's weights."""
    import val

    with tempfile.TemporaryDirectory(prefix="export-val-") as tmp:
        return val.run(data=data, weights=str(path), imgsz=opt.imgsz[0], batch_size=opt.batch_size,
                       device=opt.device, workers=2, half=half, plots=False, project=tmp, name=path.name).map50_95


def map_data(opt: argparse.Namespace, data: dict | None) -> dict | None:
    """`data` where val can score the files, else None (with the reason when --data asked for mAP)."""
    if data is None or (opt.imgsz[0] == opt.imgsz[1] and not opt.nms):
        return data
    LOGGER.warning("WARNING: mAP skipped: " + ("--nms files output post-NMS rows val cannot read" if opt.nms
                                                else "val needs a square --imgsz"))
    return None


def verify(opt: argparse.Namespace, files: list[ExportedFile], model: torch.nn.Module, pt_model: torch.nn.Module,
           data: dict | None) -> list[dict[str, Any]]:
    """Parity, latency and (with --data) mAP of every file, beside the .pt's; returns the table rows.

    Parity, latency and the rows come from utils.infer.verify; the mAP column is filled here, because it runs
    val.run (a CLI, which library code does not import) and the images each row is scored on follow export's
    flags: square batches for fixed-size files, rect ones for a dynamic file, half precision as val --half."""
    ref = Reference(model, parity_batches(data, opt.imgsz, opt.batch_size))
    data = map_data(opt, data)
    rows = [pytorch_row(Path(opt.weights), ref)]
    if data is not None:
        rows[0]["map50_95"] = square_val_map(opt, pt_model, data)
    rect_map = None
    for f in files:
        backend = load_backend(f.path, opt.device)
        row = scored_row(opt, f, backend, ref, data)
        if data is not None and backend.dynamic:  # a dynamic file is validated on rect batches, like the .pt
            if rect_map is None:
                rect_map = file_map(opt, Path(opt.weights), data)
            LOGGER.info(f"pytorch mAP50-95 on rect batches (what dynamic {f.label} saw): {rect_map:.4f}")
            row["map50_95_pt_same_input"] = rect_map
        rows.append(row)
        if f.precision == "fp32" and export_format(f.fmt).half_at_runtime:  # and as its runtime runs it with --half
            reduced = load_backend(f.path, opt.device, fp16=True)
            if reduced.precision != "f32":
                rows.append(scored_row(opt, ExportedFile(f.fmt, f.path, reduced.precision), reduced, ref, data,
                                       half=True))
    return rows


def scored_row(opt: argparse.Namespace, f: ExportedFile, backend: Backend, ref: Reference, data: dict | None,
               half: bool = False) -> dict[str, Any]:
    """file_row, with `data` its val mAP50-95 (run as `half` loaded it)."""
    row = file_row(f, backend, ref)
    if data is not None:
        row["map50_95"] = file_map(opt, f.path, data, half)
    return row


def check_half(opt: argparse.Namespace, device: torch.device) -> None:
    """What --half means per format and device: refused where it cannot apply, said where it changes less."""
    converted = {fmt.name for fmt in EXPORT_FORMATS if fmt.converted} & set(opt.include)  # fp32 on the CPU
    if opt.half and device.type == "cpu" and not converted:
        raise UserInputError("--half: FP16 ONNX/TorchScript export needs a CUDA --device "
                             "(on CPU, --half only adds an fp16 .tflite)")
    if opt.half and any(export_format(name).half_at_runtime for name in opt.include):
        LOGGER.info("--half: the OpenVINO IR stays fp32; run it with --half (detect/val) for the runtime's "
                    "reduced precision (bf16 on CPUs that have it)")
    if opt.half and opt.int8 and device.type != "cpu" and "onnx" in opt.include:
        raise UserInputError("--int8: quantizes a float32 ONNX file; export --half and --int8 in two runs")
    if opt.half and device.type == "cpu" and set(opt.include) - converted:
        LOGGER.warning("WARNING: --half: ONNX/TorchScript stay fp32 on CPU (FP16 needs a CUDA --device); "
                       "the fp16 .tflite is written")


def export_form(opt: argparse.Namespace, pt_model: torch.nn.Module,
                device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model every exporter traces (fused, export mode, --nms wrapped, fp16 with --half on CUDA) and its
    dummy input of the export size."""
    model = prepare_for_export(pt_model, opt.nms, opt.topk_all, opt.conf_thres, opt.iou_thres).to(device)
    im = torch.zeros(opt.batch_size, 3, *opt.imgsz, device=device)
    if opt.half and device.type != "cpu":
        model, im = model.half(), im.half()
    with torch.inference_mode():
        shape = tuple(model(im).shape)
    LOGGER.info(f"PyTorch: {opt.weights} ({file_size_mb(Path(opt.weights)):.1f} MB), input {tuple(im.shape)}, "
                f"output {shape}")
    return model, im


def report(opt: argparse.Namespace, rows: list[dict[str, Any]], save_dir: Path, device: torch.device) -> None:
    """Print the summary table; a run folder is ours, so it also keeps the table (the weights folder is not)."""
    LOGGER.info(f"\nExport summary ({device.type}, {torch.get_num_threads()} threads):\n{format_table(rows)}")
    if opt.project is not None or opt.name is not None:
        (save_dir / "summary.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")


def export(opt: argparse.Namespace) -> dict[str, Any]:
    """Check every flag, export each --include format, then verify the files; opt.imgsz becomes the export (h, w)."""
    check_options(opt)
    device = select_device(opt.device)
    check_half(opt, device)
    ckpt = load_checkpoint(opt.weights)  # read once: the model and the size it was trained at
    pt_model = model_from_checkpoint(ckpt, opt.weights).eval()
    opt.imgsz = opt.imgsz or [checkpoint_imgsz(ckpt) or DEFAULT_IMGSZ]
    opt.imgsz = round_imgsz(opt.imgsz if len(opt.imgsz) > 1 else opt.imgsz[0], int(max(pt_model.stride)))
    save_dir = output_folder(opt)
    targets = output_files(opt, save_dir)
    refuse_to_overwrite(targets, opt.exist_ok)
    data = check_dataset(opt.data) if opt.data else None

    model, im = export_form(opt, pt_model, device)
    files = export_all(opt, model, im, targets, data)
    rows = verify(opt, files, model.float().to(device), pt_model.to(device), data) if opt.verify else []
    if rows:
        report(opt, rows, save_dir, device)
    LOGGER.info(f"Export complete: {', '.join(str(f.path) for f in files)}")
    return {"save_dir": save_dir, "files": files, "rows": rows}


def run(**kwargs: Any) -> dict[str, Any]:
    """export.py as a function: run(weights='best.pt', include=['onnx', 'tflite'], imgsz=[320], int8=True, ...)."""
    opt = parse_opt([])
    unknown = sorted(set(kwargs) - set(vars(opt)))
    if unknown:
        raise UserInputError(f"run(): unknown option(s) {', '.join(unknown)}")
    vars(opt).update(kwargs)
    if isinstance(opt.include, str):
        opt.include = [opt.include]
    if isinstance(opt.imgsz, int):
        opt.imgsz = [opt.imgsz]
    return export(opt)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return export(parse_opt(argv))


if __name__ == "__main__":
    run_cli(main)
