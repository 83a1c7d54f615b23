"""Images decode the same everywhere: the denoiser reads files through the decoder the
classifiers use (16-bit scaled, transparency composited, float images scaled or refused), and
`cnnzoo denoise` never overwrites its input unless told to."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.cli.main import main
from cnnzoo.data.decode import decode_image
from cnnzoo.tasks import denoise as dn


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 256, 32768, 65535]], dtype=np.uint16)).save(path)
    image = dn.load_image(path)
    assert (image * 255).round().flatten().tolist() == [0, 1, 128, 255]
    assert torch.equal((image * 255).round().to(torch.uint8)[0], torch.from_numpy(decode_image(str(path))[..., 0]))


def test_transparency_is_composited_as_for_classification(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128  # half-transparent red on the white background
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    colour = dn.load_image(path, channels=3)
    expected = torch.from_numpy(decode_image(str(path))).permute(2, 0, 1).float() / 255
    assert torch.equal(colour, expected) and colour[1].max() > 0.4  # composited on white, not black


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_float_tiffs_are_scaled(tmp_path, scale):
    values = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4) * scale
    path = tmp_path / "float.tif"
    Image.fromarray(values, mode="F").save(path)
    image = dn.load_image(path)
    assert image.max().item() == pytest.approx(1.0) and image.min().item() == 0.0


def test_float_tiffs_out_of_range_are_refused(tmp_path):
    path = tmp_path / "hdr.tif"
    Image.fromarray(np.array([[-5.0, 300.0]], dtype=np.float32), mode="F").save(path)
    with pytest.raises(dn.DenoiseDataError, match=r"float image with values in \[-5, 300\]"):
        dn.load_image(path)


def test_denoise_refuses_to_overwrite_its_input(tmp_path, capsys):
    weights = tmp_path / "w.pt"
    image = tmp_path / "in.png"
    Image.fromarray(np.full((32, 32), 120, dtype=np.uint8)).save(image)
    before = image.read_bytes()
    torch.save({"format": "x"}, weights)  # never read: the output check comes first
    assert main(["denoise", str(weights), str(image), str(image)]) == 2
    err = capsys.readouterr().err
    assert "is the input image" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert image.read_bytes() == before
    assert main(["denoise", str(weights), str(image), str(tmp_path / "missing" / "out.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_force_overwrites_the_input(tmp_path, shared_dir):
    weights = shared_dir / "weights" / "dncnn" / "dncnn_sigma25_model.pth"
    image = tmp_path / "in.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(image)
    before = image.read_bytes()
    assert main(["denoise", str(weights), str(image), str(image), "--force"]) == 0
    assert image.read_bytes() != before and dn.load_image(image).shape == (1, 32, 32)
