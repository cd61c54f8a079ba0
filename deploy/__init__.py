"""Run exported PConv-YOLO models (.onnx, .tflite, OpenVINO IR) on a device that has no PyTorch.

The package is copied alone to the device (a Raspberry Pi, a Jetson, an Android board): it needs only
numpy, OpenCV and one runtime (onnxruntime, ai-edge-litert or openvino), and never imports the project's
utils/ or models/ (they import torch). Command line: `python -m deploy.run --model best.tflite --source 0`.
Python:

    from deploy import Detector, Options
    detector = Detector("best.onnx", Options(conf_thres=0.25))
    result = detector.predict(cv2.imread("bus.jpg"))   # result.xyxy / .conf / .cls in the image's pixels
"""
from .detector import Detections, Detector, Options
from .errors import UserInputError

__all__ = ["Detections", "Detector", "UserInputError", "Options"]
