"""Published weights for cnnzoo's models: a registry of entries, safe readers, exact converters.

`list_weights`/`get_weights`/`default_weights` look entries up; `load_pretrained(model, spec,
arch=...)` reads a tag's cached file (or any file path), converts torchvision/timm/akamaster/
DnCNN names to cnnzoo's, loads strictly and stamps preprocessing and class names on the
model; `download` fetches a tag's file into the cache. See docs/weights.md.
"""

from .catalogue import ENTRIES, default_weights, get_weights, list_weights
from .classes import class_names
from .entry import Preprocessing, WeightsEntry, WeightsError
from .hub import cache_dir, cached_path, download, is_cached
from .loading import (Loaded, adapt_input_conv, build_model_for, create_pretrained, entry_for, load_pretrained,
                      read_state_file, resolve)

__all__ = [
    "ENTRIES", "Loaded", "Preprocessing", "WeightsEntry", "WeightsError", "adapt_input_conv", "build_model_for",
    "cache_dir", "cached_path", "class_names", "create_pretrained", "default_weights", "download", "entry_for",
    "get_weights", "is_cached", "list_weights", "load_pretrained", "read_state_file", "resolve",
]
