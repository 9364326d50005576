"""aitk: applied-AI use cases as plugins; torch to train, ONNX Runtime to predict."""

from applied_aitk.errors import AitkError, DeviceError, InputError, shown
from applied_aitk.hookspecs import hookimpl
from applied_aitk.usecase import Graph, Predictor, Record, RecordBatch, Sample, TrainResult, UseCase

__version__ = "0.1.0"
__all__ = ["AitkError", "DeviceError", "InputError", "Graph", "Predictor", "Record", "RecordBatch", "Sample", "TrainResult", "UseCase", "hookimpl", "shown"]
