"""The image the heatmaps are drawn over is what the model's preprocessing keeps: CLIP's central square, SigLIP's
whole upload."""
import numpy as np
from PIL import Image

from mire_jax.serve.heatmap_png import model_view


def test_model_view_follows_the_resize_mode():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (40, 100, 3), dtype=np.uint8))  # 100 wide, 40 high
    crop = model_view(image, 20)
    np.testing.assert_array_equal(np.asarray(crop), np.asarray(image.crop((30, 0, 70, 40)).resize((20, 20),
                                                                                                  Image.BICUBIC)))
    whole = model_view(image, 20, resize="square")
    np.testing.assert_array_equal(np.asarray(whole), np.asarray(image.resize((20, 20), Image.BICUBIC)))
    assert not np.array_equal(np.asarray(crop), np.asarray(whole))
