"""CLIP preprocessing against a direct PIL/numpy computation and transformers' PIL CLIP processor."""
import io

import numpy as np
import pytest
from PIL import Image

from mire_jax.config import ImageProcessing
from mire_jax.retrieval import images

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])


def _random_image(height, width, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


def _direct(image: Image.Image, size: int) -> np.ndarray:
    """Written out independently: shorter side -> size (bicubic), centre crop, /255, CLIP mean/std."""
    image = image.convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
    new = (size, int(h * size / w)) if w <= h else (int(w * size / h), size)
    assert min(new) == size and abs(max(new) - max(w, h) * scale) < 1
    x = np.asarray(image.resize(new, Image.BICUBIC), dtype=np.float64)
    top, left = (x.shape[0] - size) // 2, (x.shape[1] - size) // 2
    x = x[top:top + size, left:left + size] / 255.0
    return (x - MEAN) / STD


@pytest.mark.parametrize("shape", [(300, 451), (640, 480), (32, 32), (225, 223), (97, 701)])
def test_matches_direct_computation(shape):
    image = _random_image(*shape, seed=shape[0])
    out = images.preprocess(image, ImageProcessing(size=224))
    assert out.shape == (224, 224, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, _direct(image, 224), atol=2e-6)


def test_other_size_and_modes():
    for mode in ("L", "RGBA", "P"):
        image = _random_image(50, 70, seed=3, mode=mode)
        out = images.preprocess(image, ImageProcessing(size=32))
        assert out.shape == (32, 32, 3)
        np.testing.assert_allclose(out, _direct(image, 32), atol=2e-6)


def test_matches_transformers_clip_processor():
    pil_clip = pytest.importorskip("transformers.models.clip.image_processing_pil_clip")
    processor = pil_clip.CLIPImageProcessorPil(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, resample=3,
        image_mean=list(MEAN), image_std=list(STD))
    for shape in [(300, 451), (480, 640), (64, 64)]:
        image = _random_image(*shape, seed=7)
        ref = processor(image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
        np.testing.assert_allclose(images.preprocess(image, ImageProcessing(size=224)), ref, atol=1e-6)


def test_bytes_roundtrip_and_errors(fixtures_dir):
    path = fixtures_dir / "vid2r/images/coco/train2017/000000000139.jpg"
    data = images.read_image_file(path)
    out = images.preprocess_bytes(data, ImageProcessing(size=32), source=str(path))
    np.testing.assert_allclose(out, _direct(Image.open(path), 32), atol=2e-6)

    with pytest.raises(images.ImageError, match="empty image data.*rec-1"):
        images.decode_image(b"", source="rec-1")
    with pytest.raises(images.ImageError, match="cannot decode image .*truncated.jpg"):
        images.decode_image(data[: len(data) // 2], source="truncated.jpg")
    with pytest.raises(images.ImageError, match="cannot decode"):
        images.decode_image(b"not an image at all", source="x")
    with pytest.raises(images.ImageError, match="no_such.jpg"):
        images.read_image_file(fixtures_dir / "no_such.jpg")


def test_png_bytes():
    image = _random_image(40, 30, seed=5)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    np.testing.assert_allclose(images.preprocess_bytes(buf.getvalue(), ImageProcessing(size=24)),
                               _direct(image, 24), atol=2e-6)


SIGLIP = ImageProcessing(size=48, mean=(0.5,) * 3, std=(0.5,) * 3, resize="square")


def test_siglip_preprocessing_is_the_model_configs():
    from mire_jax.config import MIReConfig, VisionConfig
    assert VisionConfig.siglip().image_processing() == ImageProcessing(size=384, mean=(0.5,) * 3, std=(0.5,) * 3,
                                                                       resize="square")
    assert MIReConfig.tiny_siglip().vision.image_processing() == ImageProcessing(
        size=32, mean=(0.5,) * 3, std=(0.5,) * 3, resize="square")
    assert MIReConfig().vision.image_processing() == ImageProcessing(size=224)  # CLIP's, unchanged


@pytest.mark.parametrize("shape", [(300, 451), (97, 701), (48, 48), (30, 20)])
def test_siglip_square_matches_transformers_siglip_processor(shape):
    """Straight to a square (no crop, aspect not kept), bicubic, x / 255, mean and std 0.5: transformers'
    SiglipImageProcessor (PIL backend) at the same size."""
    pil_siglip = pytest.importorskip("transformers.models.siglip.image_processing_pil_siglip")
    processor = pil_siglip.SiglipImageProcessorPil(size={"height": 48, "width": 48}, resample=3,
                                                    image_mean=[0.5] * 3, image_std=[0.5] * 3)
    image = _random_image(*shape, seed=shape[1])
    ref = processor(image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    out = images.preprocess(image, SIGLIP)
    assert out.shape == (48, 48, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_siglip_square_matches_the_published_transforms():
    """The published SigLipImageProcessor (retrievers/layers/siglip.py) chains transformers' functions: RGB, numpy,
    `resize` to (size, size) bicubic to channels-first, `rescale` 1/255, `normalize` 0.5 / 0.5. The same chain here."""
    transforms = pytest.importorskip("transformers.image_transforms")
    from transformers.image_utils import ChannelDimension, PILImageResampling
    first = ChannelDimension.FIRST
    for shape, mode in [((300, 451), "RGB"), ((64, 40), "L")]:
        image = _random_image(*shape, seed=9, mode=mode)
        x = np.asarray(image.convert("RGB"))
        x = transforms.resize(x, size=(48, 48), resample=PILImageResampling.BICUBIC, data_format=first)
        x = transforms.rescale(x, scale=1 / 255, data_format=first)
        x = transforms.normalize(x, mean=(0.5,) * 3, std=(0.5,) * 3, data_format=first)
        np.testing.assert_allclose(images.preprocess(image, SIGLIP), x.transpose(1, 2, 0), atol=1e-6)
