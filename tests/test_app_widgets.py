"""Display helpers: grey (1-channel) models' images must display like RGB ones."""
import numpy as np
from PIL import Image

from app.widgets import show


def test_show_accepts_grey_and_rgb_arrays_and_enlarges_without_blur():
    grey = np.zeros((28, 28, 1), np.uint8)
    grey[3, 5, 0] = 200
    img = show(grey, 252)
    assert img.mode == "L" and img.size == (252, 252)
    assert img.getpixel((5 * 9 + 4, 3 * 9 + 4)) == 200 and img.getpixel((0, 0)) == 0  # nearest, ×9
    rgb = show(np.full((32, 32, 3), 7, np.uint8), 256)
    assert rgb.mode == "RGB" and rgb.size == (256, 256)
    assert show(Image.new("RGB", (16, 16)), 256).size == (256, 256)
