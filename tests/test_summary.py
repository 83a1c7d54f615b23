from __future__ import annotations

import pytest
from torch import nn

from cnnzoo import create_model, summary


def conv_macs(cin, cout, k, h_out, w_out, groups=1):
    return cout * (cin // groups) * k * k * h_out * w_out


@pytest.mark.parametrize("conv, size, expected", [
    (nn.Conv2d(3, 64, 3, padding=1), 32, 1_769_472),  # the hand-computed example
    (nn.Conv2d(3, 64, 3, stride=2, padding=1), 32, conv_macs(3, 64, 3, 16, 16)),
    (nn.Conv2d(16, 32, 3, padding=2, dilation=2), 20, conv_macs(16, 32, 3, 20, 20)),
    (nn.Conv2d(16, 32, 3, groups=4), 10, conv_macs(16, 32, 3, 8, 8, groups=4)),
    (nn.Conv2d(8, 8, 5, groups=8, padding=0), 9, 8 * 25 * 5 * 5),  # depthwise
    (nn.Conv2d(4, 6, (1, 7), padding=(0, 3)), 12, 6 * 4 * 7 * 12 * 12),
])
def test_conv_macs_are_exact(conv, size, expected):
    s = summary(conv, (conv.in_channels, size, size))
    assert s.macs == expected
    assert s.flops == 2 * expected
    assert s.total_params == sum(p.numel() for p in conv.parameters())


def test_linear_and_matmul_macs():
    class MatMul(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(10, 20)

        def forward(self, x):  # x: (1, 3, 4, 10)
            y = self.fc(x)  # 12 rows x 10 x 20
            return y @ y.transpose(-1, -2)  # (4x20) @ (20x4) per channel: 3 * 4*4*20

    s = summary(MatMul(), (3, 4, 10))
    assert s.macs == 12 * 10 * 20 + 3 * 4 * 4 * 20


def test_table_rows_shapes_and_depth():
    model = create_model("lenet5")
    full = summary(model, (1, 32, 32))
    by_name = {r.name: r for r in full.rows}
    assert by_name["features.0"].output_shape == (1, 6, 28, 28)
    assert by_name["features.0"].macs == 6 * 25 * 28 * 28
    assert by_name["features.3"].params == 16 * 6 * 25 + 16
    assert sum(r.params for r in full.rows) == full.total_params
    assert sum(r.macs for r in full.rows) == full.macs
    top = summary(model, (1, 32, 32), depth=1)
    assert [r.name for r in top.rows] == ["features", "f6", "drop", "fc"]
    assert top.macs == full.macs and sum(r.macs for r in top.rows) == full.macs
    text = str(full)
    assert "FLOPs (= 2 x MACs)" in text and f"{full.total_params:,}" in text


def test_trainable_params_and_default_input_size():
    model = create_model("lenet5_relu")
    for p in model.features.parameters():
        p.requires_grad = False
    s = summary(model)
    assert s.input_size == (1, 32, 32)
    assert s.trainable_params == s.total_params - sum(p.numel() for p in model.features.parameters())


def test_summary_restores_training_mode():
    model = create_model("lenet5").train()
    summary(model, (1, 32, 32))
    assert model.training


def test_modules_not_run_in_eval_are_listed():
    from cnnzoo.analysis.summary import NOT_RUN

    s = summary(create_model("googlenet_cifar"), (3, 32, 32), depth=1)
    not_run = [r for r in s.rows if r.output_shape == NOT_RUN]
    assert [r.name for r in not_run] == ["aux_heads"] and not_run[0].params > 0
    assert sum(r.params for r in s.rows) == s.total_params
