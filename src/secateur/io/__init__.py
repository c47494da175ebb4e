"""Saved models on disk: folder-level atomic saves, verified loads, Hugging Face checkpoints, output folders.

``saving.py`` (``save``, ``save_pretrained``), ``loading.py`` (``load``, verified reads), ``hf.py`` (what a
Hugging Face checkpoint of a pruned model holds), ``manifest.py`` (the manifest's schema), ``state.py``
(tensors as stored), ``folder.py`` (the atomic commit protocol), ``fs.py`` (every filesystem write, and the
folder lock), ``output.py`` (run output folders).
"""

from .loading import describe, load, read_folder, read_manifest
from .output import OutputFolder, output_folder
from .saving import save, save_pretrained

__all__ = ["OutputFolder", "describe", "load", "output_folder", "read_folder", "read_manifest", "save",
           "save_pretrained"]
