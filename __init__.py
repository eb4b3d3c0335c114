"""
DFD, a video deepfake detector: frozen CLIP ViT-L/14 with spatiotemporal adapters.

This folder is both the Hugging Face Hub model repository and, installed, the Python package `dfd`:

- configuration_dfd.py, modeling_dfd.py, processing_dfd.py, decoding_dfd.py, fetching_dfd.py, faces_dfd.py: what the
  Hub loads with `trust_remote_code` (they import only libraries and each other, relatively);
- handler.py, inference.py: what an Inference Endpoint loads from an exported model folder; pipeline_dfd.py:
  what `pipeline("video-classification", trust_remote_code=True)` runs (config.json's `custom_pipelines`);
- train_accelerate.py: the training script;
- tools/: the `dfd` command, the export, the training data pipeline and the demo, built on the files above.
"""
