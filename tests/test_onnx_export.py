"""Export helpers: dynamic batch axes, int8 quantization (static for convolutions), fp16, IO binding."""

import numpy as np
import onnx
import pytest
import torch

from applied_aitk.errors import ParityError
from applied_aitk.onnx_export import check_parity, export, quantize_dynamic, quantize_static
from applied_aitk.runtime import Runtime


def small_cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4),
    ).eval()


def cosine(a, b):
    return float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_static_quantization_of_a_cnn_keeps_its_outputs(tmp_path, fmt):
    model, images = small_cnn(), torch.rand(6, 3, 16, 16)
    info = export(model, (images[:2],), tmp_path / "m.onnx", ["image"], ["logits"], parity_inputs=(images,))
    assert info["schema"]["inputs"][0]["shape"][0] == "batch"
    quantize_static(tmp_path / "m.onnx", tmp_path / "m.int8.onnx", ({"image": images[i : i + 2].numpy()} for i in range(0, 6, 2)), fmt=fmt)
    ops = {node.op_type for node in onnx.load(str(tmp_path / "m.int8.onnx")).graph.node}
    assert ("QuantizeLinear" in ops) if fmt == "qdq" else ("QLinearConv" in ops)
    assert "ConvInteger" not in ops
    (got,) = Runtime(device="cpu").session(tmp_path / "m.int8.onnx")(images.numpy())
    assert cosine(got.ravel(), model(images).detach().numpy().ravel()) > 0.99


def test_dynamic_quantization_of_an_mlp(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3)).eval()
    x = torch.randn(32, 16)
    export(model, (x[:4],), tmp_path / "m.onnx", ["x"], ["y"], parity_inputs=(x,))
    quantize_dynamic(tmp_path / "m.onnx", tmp_path / "m.int8.onnx")
    ops = {node.op_type for node in onnx.load(str(tmp_path / "m.int8.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    (got,) = Runtime(device="cpu").session(tmp_path / "m.int8.onnx")(x.numpy())
    assert cosine(got.ravel(), model(x).detach().numpy().ravel()) > 0.99
    assert not (tmp_path / "m.int8.prep.onnx").exists()



def test_dynamic_quantization_cannot_saturate_on_cpus_without_vnni(tmp_path):
    """Full-range int8 weights times uint8 activations overflow VPMADDUBSW's int16 pair sums (AVX2
    without VNNI); weights of equal magnitude and positive inputs are the worst case."""
    model = torch.nn.Linear(28, 7, bias=False).eval()
    with torch.no_grad():
        model.weight.copy_(0.07 * torch.sign(torch.randn(7, 28, generator=torch.Generator().manual_seed(0))))
    x = torch.rand(64, 28, generator=torch.Generator().manual_seed(1))
    export(model, (x[:4],), tmp_path / "m.onnx", ["x"], ["y"], parity_inputs=(x,))
    quantize_dynamic(tmp_path / "m.onnx", tmp_path / "m.int8.onnx")
    (got,) = Runtime(device="cpu").session(tmp_path / "m.int8.onnx")(x.numpy())
    want = model(x).detach().numpy()
    assert np.abs(got - want).max() < 0.02 * np.abs(want).max()

class LastStep(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 8, batch_first=True)  # exported with one zeros value as both initial states
        self.out = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.out(self.lstm(x)[0][:, -1])


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the LSTM's shape checks, traced as constants
@pytest.mark.parametrize("make, shape", [(small_cnn, (5, 3, 16, 16)), (LastStep, (5, 12, 3))])
def test_fp16_variant_is_written_beside_the_fp32_one_and_checked_against_torch(tmp_path, make, shape):
    from applied_aitk import Graph, TrainResult
    from applied_aitk.package import package

    class Usecase:
        name, plugin = "wine", "fraud"  # the fraud entry point: a plugin of the aitk distribution

    torch.manual_seed(0)
    model, x = make().eval(), torch.randn(*shape)
    bundle = package(TrainResult([Graph(model, (x[:2],), ["x"], ["y"], parity_inputs=(x,))], model.state_dict()), tmp_path / "b", Usecase(), {}, ["fp16"])
    info = bundle.graph()["variants"]["fp16"]
    assert info["file"] == "model.fp16.onnx" and info["parity"]["max_abs_diff"]["y"] > 0
    graph = onnx.load(str(bundle.model_file("fp16"))).graph
    assert onnx.TensorProto.FLOAT16 in {t.data_type for t in graph.initializer}
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # callers feed what they fed before
    (got,) = Runtime(device="cpu").session(bundle.model_file("fp16"))(x.numpy())
    assert got.dtype == np.float32 and np.allclose(got, model(x).detach().numpy(), atol=0.05)


def test_parity_check_names_the_file_and_output_that_drift(tmp_path):
    model, x = small_cnn(), torch.rand(4, 3, 16, 16)
    export(model, (x,), tmp_path / "m.onnx", ["image"], ["logits"])
    with torch.no_grad():
        model[-1].bias += 1.0
    with pytest.raises(ParityError, match="m.onnx differs from torch on output 'logits'"):
        check_parity(model, tmp_path / "m.onnx", (x,), ["logits"], atol=1e-4, rtol=1e-2)


def test_outputs_kept_on_the_device_feed_back_in_like_numpy(tmp_path):
    """IO binding: a recurrent step whose state stays an OrtValue gives what numpy round trips give."""
    step = torch.nn.GRUCell(4, 6).eval()
    x, h = torch.randn(3, 4), torch.zeros(3, 6)
    export(step, (x, h), tmp_path / "step.onnx", ["x", "h"], ["h_next"])
    session = Runtime(device="cpu").session(tmp_path / "step.onnx")
    state, on_device = h.numpy(), h.numpy()
    for _ in range(3):
        (state,) = session(x.numpy(), state)
        (on_device,) = session.run_on_device({"x": x.numpy(), "h": on_device})
    assert not isinstance(on_device, np.ndarray)
    np.testing.assert_allclose(on_device.numpy(), state, atol=1e-6)
    buffer = session.buffer((3, 6))
    assert session.run_on_device({"x": x.numpy(), "h": h.numpy()}, into={"h_next": buffer}) == []  # written in place, not returned
    np.testing.assert_allclose(buffer.numpy(), session(x.numpy(), h.numpy())[0], atol=1e-6)


def test_a_graph_with_external_weights_is_saved_as_one_data_file_beside_it(tmp_path):
    """Over 2 GiB (a 0.5B-parameter model in fp32) torch writes one file per weight, named after the
    weight: two graphs in one bundle would overwrite each other's. save_onnx keeps one FILE.data."""
    from applied_aitk.onnx_export import quantize_dynamic, save_onnx

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).eval()
    x = torch.randn(3, 64)
    export(model, (x,), tmp_path / "plain.onnx", ["x"], ["y"])
    loose = tmp_path / "loose"
    loose.mkdir()
    onnx.save_model(onnx.load(str(tmp_path / "plain.onnx")), str(loose / "m.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=False, size_threshold=0)  # as torch writes a large model
    assert len(list(loose.iterdir())) > 2
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    save_onnx(loose / "m.onnx", bundle / "model.onnx")
    assert sorted(p.name for p in bundle.iterdir()) == ["model.onnx", "model.onnx.data"]
    want = model(x).detach().numpy()
    (got,) = Runtime(device="cpu").session(bundle / "model.onnx")(x.numpy())
    np.testing.assert_allclose(got, want, atol=1e-5)
    quantize_dynamic(bundle / "model.onnx", bundle / "model.int8.onnx")  # reads the external weights
    (got,) = Runtime(device="cpu").session(bundle / "model.int8.onnx")(x.numpy())
    assert cosine(got.ravel(), want.ravel()) > 0.99
