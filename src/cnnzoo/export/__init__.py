"""A trained model out of training: the fast inference form (BatchNorm folded, channels_last),
exported artefacts (ONNX, TorchScript, torch.export) verified against eager, and their speed.

This package sits above `models` and below `engine`: it needs nothing but a model and PyTorch,
so that `engine`'s predict and eval can use its fast path and ONNX Runtime backend, and the CLI
(which reads checkpoints through `engine`) hands it a built model.
"""
