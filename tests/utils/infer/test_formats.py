"""utils/infer/formats.py: the one export-format table, and what export.py and the backends read from it."""
from pathlib import Path

import export
from deploy.engines import ENGINES
from utils.infer.backends import SUFFIXES
from utils.infer.formats import EXPORT_FORMATS, FORMATS, INT8_FORMATS, export_format


def test_every_engine_format_is_the_engine_the_runner_opens_by_its_suffix():
    for fmt in EXPORT_FORMATS:
        assert SUFFIXES[fmt.suffix] == fmt.name
        if fmt.engine is not None:
            assert ENGINES[fmt.suffix] is fmt.engine and fmt.engine.runtime == fmt.name
    assert set(ENGINES) <= {fmt.suffix for fmt in EXPORT_FORMATS}, "every runtime the runner has can be exported"


def test_file_names_and_precisions():
    folder = Path("w")
    names = {fmt.label(p): fmt.file(folder, "best", p).as_posix() for fmt in EXPORT_FORMATS
             for p in ("fp32", *fmt.precisions)}
    assert names == {"torchscript": "w/best.torchscript", "onnx": "w/best.onnx", "onnx int8": "w/best-int8.onnx",
                     "tflite": "w/best.tflite", "tflite fp16": "w/best-fp16.tflite", "tflite int8": "w/best-int8.tflite",
                     "openvino": "w/best_openvino_model/best.xml",
                     "openvino int8": "w/best_int8_openvino_model/best.xml"}
    assert FORMATS == ("torchscript", "onnx", "tflite", "openvino") and INT8_FORMATS == ("onnx", "tflite", "openvino")
    assert [f.name for f in EXPORT_FORMATS if f.half_at_runtime] == ["openvino"]


def test_export_py_reads_its_targets_and_help_from_the_table(tmp_path):
    opt = export.parse_opt(["--weights", "best.pt", "--include", "onnx", "tflite", "--int8", "--half"])
    assert list(export.output_files(opt, tmp_path)) == ["onnx", "onnx int8", "tflite", "tflite fp16", "tflite int8"]
    assert export.output_files(opt, tmp_path)["tflite fp16"] == export_format("tflite").file(tmp_path, "best", "fp16")
