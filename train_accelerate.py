#!/usr/bin/env python
"""
Train (or evaluate) the DFD video deepfake detector with 🤗 Accelerate, following the model card's recipe.

    accelerate launch train_accelerate.py --train_dir DATA --output_dir OUT     # DATA/real/*, DATA/fake/*
    accelerate launch -m dfd.train_accelerate --train_dir DATA --output_dir OUT # the same, from the installed package
    python train_accelerate.py --do_eval --model_path OUT/model --eval_dir TEST_A TEST_B --output_dir EVAL_OUT

The script imports the installed `dfd` package (from a clone: `pip install -e .` first).

Recipe defaults (the card): frozen CLIP ViT-L/14 with spatiotemporal adapters, 12 frames at 384x384, batch 16 per
device with 2 accumulation steps, AdamW (weight decay 0.05, none on biases and norms), lr 5e-6 with cosine decay after
10% linear warmup, 12 epochs, cross-entropy with label smoothing 0.1, gradient clipping at 1.0, class-balanced
sampling, video-level flip + brightness jitter, bf16 mixed precision where the GPU supports it, seed 42.

Training data comes as a manifest (`dfd data index FORMAT ROOT --output M.csv` indexes a dataset as downloaded, with
its official splits, or splits by identity where it has none), as FORMAT:ROOT (the same, indexed on the fly), as a
folder of real/ and fake/, or as a Hub dataset. Without a validation split, one is held out by identity group (by a
stratified split only for videos without groups). Training, validation and evaluation sets that share a video or an
identity are refused unless --allow_overlap.

    python train_accelerate.py --train_dir ffpp:/data/FF++ --eval_dir celebdf:/data/Celeb-DF-v2 --output_dir OUT

Writes into OUT: model/ (the best checkpoint, Hub-ready with a model card, and the metrics.json and roc_curve.png of
its validation, replaced in one step with it), log.jsonl, runs/ (tensorboard), checkpoints/ (resumable with
--resume_from_checkpoint) and, with --eval_dir, evaluation/ (the export's metrics.json, predictions.csv and ROC
curves on the evaluation sets, whose cross-dataset table the model card shows too). --do_eval writes metrics.json,
predictions.csv and ROC curves into OUT.

The arguments, the output folder, the checkpoint to resume, the Hub (with --push_to_hub) and the data are checked
before any model loads. A refusal or a failure the user can act on ends the run with one line `error: ...` and exit
status 1 (usage errors: 2); --debug shows its traceback.
"""

import sys
import time
from pathlib import Path

from accelerate.utils import set_seed
from tqdm.auto import tqdm

from dfd.tools.train.accelerator import make_accelerator, tracker_config
from dfd.tools.train.arguments import parse_args
from dfd.tools.train.calibration import calibrate_decision
from dfd.tools.train.checkpoints import find_checkpoint, keep_only_trainable_weights, load_best_checkpoint, resume
from dfd.tools.train.data import load_frames, load_tables, make_eval_dataloader, make_train_dataloader
from dfd.tools.train.errors import TrainingError, one_line
from dfd.tools.train.evaluation import (
    cross_dataset,
    cross_dataset_table,
    evaluate_model,
    evaluate_sets,
    load_metric,
    score_sets,
    write_cross_dataset,
)
from dfd.tools.train.export import export_best_checkpoint
from dfd.tools.train.hub import check_hub_access, push_export
from dfd.tools.train.loop import end_epoch, train_one_epoch
from dfd.tools.train.model import load_model_and_processor, prepare_model
from dfd.tools.train.optimization import make_lr_scheduler, make_optimizer, training_length
from dfd.tools.train.output import EVALUATION_NAME, check_output_dir
from dfd.tools.train.summary import describe_run


def main(argv: list[str] | None = None):
    args = parse_args(argv, description=__doc__)
    accelerator = make_accelerator(args)
    # Each process gets its own seed (seed + rank) for augmentation and dropout; the model starts from rank 0's
    # weights (DDP broadcasts them) and the sampler has its own generator, the same on every rank.
    set_seed(args.seed, device_specific=True)
    try:
        # Checked before any model loads: the output folder, the checkpoint to resume, the Hub, the data.
        check_output_dir(args, accelerator)
        checkpoint = find_checkpoint(args, accelerator)
        if args.push_to_hub:
            check_hub_access(args.hub_model_id)
        tables = load_tables(args, accelerator)

        # Model and data: the frame cache decodes through the model's own processor.
        model, processor = load_model_and_processor(args, tables.crop)
        prepare_model(args, model, accelerator)
        data = load_frames(args, accelerator, tables, processor)
        metric = load_metric(accelerator)
        if args.do_eval:
            evaluate_sets(args, accelerator, model, processor, metric, data)
            return
        train_dataloader, sampler_generator = make_train_dataloader(args, data)
        eval_dataloader = make_eval_dataloader(args, data, data.validation)

        # Optimizer and schedule.
        optimizer = make_optimizer(args, model)
        max_train_steps, num_train_epochs = training_length(args, accelerator, train_dataloader)
        lr_scheduler = make_lr_scheduler(args, optimizer, max_train_steps, accelerator)
        model, optimizer, train_dataloader, eval_dataloader, lr_scheduler = accelerator.prepare(
            model, optimizer, train_dataloader, eval_dataloader, lr_scheduler
        )
        accelerator.register_save_state_pre_hook(keep_only_trainable_weights)
        accelerator.init_trackers("dfd", config=tracker_config(args))
        run = describe_run(args, accelerator, model, data, max_train_steps, num_train_epochs)
        state = resume(args, accelerator, model, checkpoint, max_train_steps)

        # The loop: an epoch's order depends only on (seed, epoch), which makes a mid-epoch resume exact.
        started_at = time.time() - state["train_runtime"]  # a resumed run counts the time trained before
        bar_shown = accelerator.is_local_main_process
        # Closed on an error too, so that the error's line does not continue the bar's.
        with tqdm(total=max_train_steps, initial=state["global_step"], unit="step", disable=not bar_shown) as progress:
            for epoch in range(state["epoch"], num_train_epochs):
                if state["global_step"] >= max_train_steps:
                    break
                sampler_generator.manual_seed(args.seed + epoch)
                train_one_epoch(
                    args, accelerator, model, optimizer, lr_scheduler, train_dataloader, processor, state, epoch,
                    max_train_steps=max_train_steps, progress_bar=progress, started_at=started_at,
                )  # fmt: skip
                metrics, _, _ = evaluate_model(model, eval_dataloader, processor, metric, accelerator)
                state["train_runtime"] = time.time() - started_at
                end_epoch(args, accelerator, lr_scheduler, state, epoch, metrics)

        # Calibration, the evaluation sets and export: the best checkpoint evaluated once more, so that every number
        # reported is its own.
        best_checkpoint = load_best_checkpoint(args, accelerator, model, state)
        evaluation = evaluate_model(model, eval_dataloader, processor, metric, accelerator)
        set_scores = score_sets(args, accelerator, model, processor, metric, data)
        if accelerator.is_main_process:
            _, labels, log_odds = evaluation
            calibration = calibrate_decision(labels, log_odds, args.target_false_positive_rate)
            results = cross_dataset(data, set_scores, calibration["config"], metric) if set_scores else None
            export_dir = export_best_checkpoint(
                args, processor, best_checkpoint, state, run, evaluation, calibration, results
            )
            if results:
                write_cross_dataset(Path(args.output_dir) / EVALUATION_NAME, results, str(export_dir))
                print(cross_dataset_table(results))
            if args.push_to_hub:
                push_export(args, export_dir)
    except TrainingError as error:
        if args.debug:
            raise
        sys.stderr.write(f"error: {one_line(error)}\n")  # one write: the lines of several processes don't interleave
        sys.stderr.flush()
        sys.exit(1)
    finally:
        accelerator.end_training()


if __name__ == "__main__":
    main()
