"""aitk: applied-AI use cases as plugins; torch to train, ONNX Runtime to predict."""

from toolkit.errors import AitkError, DeviceError, InputError
from toolkit.hookspecs import hookimpl
from toolkit.usecase import Predictor, Record, Sample, UseCase

__version__ = "0.1.0"
__all__ = ["AitkError", "DeviceError", "InputError", "Predictor", "Record", "Sample", "UseCase", "hookimpl"]
