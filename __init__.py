"""
DFD, a video deepfake detector: frozen CLIP ViT-L/14 with spatiotemporal adapters.

This folder is both the Hugging Face Hub model repository and, installed, the Python package `dfd`:

- the Hub files, flat `*_dfd.py` siblings that import only libraries and each other, relatively, one job each:
  configuration, modeling, processing (windows and the sampling rule), pipeline (preprocess = the processor,
  _forward = the model, postprocess = calibration and the decision rule), decision, results (the one record),
  scoring (many videos through the pipeline's pieces), explaining, inputs (the one gate and a server's limits),
  fetching, probing, decoding, faces and settings; handler.py is the Inference Endpoints entry;
- train_accelerate.py: the training script, its parts in tools/train/;
- tools/: the `dfd` command, exports, dataset indexers, plots and the demo, built on the files above.

The README's "Files" table says which file does what.
"""
