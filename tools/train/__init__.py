"""
The parts of `train_accelerate.py`, one job per module, in the order its `main` runs them:

- arguments: the command line, checked before anything loads;
- accelerator: the Accelerator, with its mixed precision (and why that one) and logging;
- output: the output folder (what a killed run left, the refusal to replace an export) and log.jsonl;
- checkpoints: finding the checkpoint to resume, atomic checkpoints, rotation, exact resume;
- hub: the Hub credentials and repo checked before training, the upload after it;
- tables: the rows of each source by split: manifests and FORMAT:ROOT (through `dfd.tools.data`), folders, Hub
  datasets;
- splits: the validation split held out by identity (stratified only without groups), the overlap guard, leakage;
- data: the run's rows, checked, their frames from the frame cache, the DataLoaders;
- frame_cache: every video decoded once, through the processor, into Arrow files on disk, each process its share;
- model: the detector and its processor, and the fp32 copy that gets exported;
- optimization: AdamW, the batch settings, the run's length and the learning-rate schedule;
- summary: what the run trains on and with;
- loop: one epoch of training, and the end of an epoch;
- transforms: video-level augmentation and normalisation on the device, and --augment robust in the workers;
- evaluation: metrics, and the evaluation sets' cross-dataset table (after training, or --do_eval);
- calibration: the window duration and the decision rule's calibration;
- export: the best checkpoint exported with its card, metrics and ROC curve;
- card: the model card;
- errors: `TrainingError`, which `main` reports as one line, and full-disk reporting.
"""
