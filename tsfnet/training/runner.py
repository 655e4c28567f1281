"""The one runner every fusion and head trains through.

It owns the device, bf16 autocast (where the GPU or CPU does bf16 natively), optional
torch.compile, DDP under torchrun, the step loop with a progress bar, validation,
logging, progress.png and atomic checkpoints. Stages (tsfnet.training.stages) say what is trained, how the
loss is computed, what a stage starts from and how it is validated; options and plans
(through the typed view `Plans`) say for how long and how fast. The runner never asks
which stage or plugin it runs.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from tsfnet.atomic import remove_stale_temporaries, write_json
from tsfnet.devices import resolve_device, resolve_precision
from tsfnet.errors import TrainingInterrupted, TsfnetError
from tsfnet.model import Network, build_model
from tsfnet.planning.plans import DEFAULT_PLANS, StageTraining, read_plans
from tsfnet.preprocessing.pipeline import cases_folder, list_preprocessed
from tsfnet.progress import make_progress
from tsfnet.registry import registry
from tsfnet.training.checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint, stage_checkpoint
from tsfnet.training.data import CaseStore, TaskBatchLoader, batch_iterator, to_batch
from tsfnet.training.interrupt import StopRequests
from tsfnet.training.losses import SynthesisCriterion, build_perceptual
from tsfnet.training.meter import LossMeter
from tsfnet.training.prefetch import device_batches
from tsfnet.training.schedules import rate_factor
from tsfnet.training.splits import fold_cases
from tsfnet.training.stages import Stage
from tsfnet.training.validation import validate

log = logging.getLogger("tsfnet")
LOG_EVERY = 10
DEFAULT_HEAD = "synthesis"  # its model folders carry no head suffix


@dataclass
class TrainOptions:
    store: Path
    fusion: str = "tsf"
    plans: str = DEFAULT_PLANS  # plans.json, or NAME for plans_NAME.json
    head: str = DEFAULT_HEAD
    config: str = "2d"
    fold: int | str = 0
    stage: str = "all"
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    output: Path | None = None
    device: str = "auto"
    resume: bool = False
    perceptual_weights: Path | None = None
    num_workers: int | None = None
    val_every: int | None = None
    compile: bool = False
    precision: str = "auto"  # bf16 autocast where the device has it natively (devices.resolve_precision)
    progress: bool = True
    seed: int | None = None


@dataclass
class TrainResult:
    model_dir: Path
    model: Network
    history: list[dict] = field(default_factory=list)


def model_dir_for(
    output: Path, fusion: str, plans: str, config: str, fold: int | str, head: str = DEFAULT_HEAD
) -> Path:
    """RESULTS/<fusion>__<plans>__<config>/fold_K (nnU-Net's trainer__plans__config); other
    heads get their own folder (<fusion>__<plans>__<config>__<head>)."""
    name = f"{fusion}__{plans}__{config}" + ("" if head == DEFAULT_HEAD else f"__{head}")
    return Path(output) / name / f"fold_{fold}"


def stages_to_run(model: Network, stage: str) -> list[str]:
    order = model.stages
    if stage == "all":
        return list(order)
    if stage not in order:
        raise TsfnetError(f"stage '{stage}' does not apply to this model; choose from all, {', '.join(order)}")
    return [stage]


class Distributed:
    """torchrun sets WORLD_SIZE/RANK; without them this is a single process."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if not self.enabled:
            return model
        ids = [device.index or 0] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)


# TrainOptions field -> the `tsfnet train` option that sets it (a bool: a bare flag).
RESUMED_OPTIONS = (
    ("plans", "--plans"),
    ("head", "--head"),
    ("config", "--config"),
    ("fold", "--fold"),
    ("stage", "--stage"),
    ("steps", "--steps"),
    ("batch_size", "--batch-size"),
    ("lr", "--lr"),
    ("output", "-o"),
    ("device", "--device"),
    ("perceptual_weights", "--perceptual-weights"),
    ("num_workers", "--workers"),
    ("val_every", "--val-every"),
    ("compile", "--compile"),
    ("precision", "--precision"),
)


def resume_command(options: TrainOptions) -> str:
    """The `tsfnet train ... --resume` that continues `options` exactly: every option the
    user set, so a resumed run keeps its perceptual weights, device, precision and loader."""
    parts = ["tsfnet train", f"-p {shlex.quote(str(options.store))}", f"--fusion {options.fusion}"]
    defaults = TrainOptions(store=options.store)
    for name, flag in RESUMED_OPTIONS:
        value = getattr(options, name)
        if value is None or str(value) == str(getattr(defaults, name)):
            continue
        parts.append(flag if isinstance(value, bool) else f"{flag} {shlex.quote(str(value))}")
    return " ".join([*parts, "--resume"])


class Runner:
    def __init__(self, options: TrainOptions) -> None:
        self.options = options
        self.command = options  # what the user asked for: `--fold all5` resumes all five, not one fold
        store = Path(options.store)
        self.plans = read_plans(store, options.plans)
        self.training = self.plans.training
        self.seed = options.seed if options.seed is not None else self.training.seed
        self.device = resolve_device(options.device)
        if self.device.type == "cuda" and self.device.index is None and "LOCAL_RANK" in os.environ:
            self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        self.dist = Distributed(self.device)
        self.precision = resolve_precision(self.device, options.precision)
        torch.manual_seed(self.seed + self.dist.rank)
        folder = cases_folder(store, self.plans)
        case_ids = list_preprocessed(store, folder)
        self.train_ids, self.val_ids = fold_cases(store, case_ids, options.fold)
        ids = sorted(set(self.train_ids) | set(self.val_ids))
        self.cases = CaseStore(store, ids, self.plans.channel_names, folder)  # unpacked when run() starts
        output = Path(options.output) if options.output else store.parent.parent / "tsfnet_results" / store.name
        self.model_dir = model_dir_for(
            output, options.fusion, self.plans.name, options.config, options.fold, options.head
        )
        self.model = build_model(self.plans, options.fusion, options.head, options.config).to(self.device)
        self.history: list[dict] = []
        self.stop = StopRequests()
        self.configuration = self.plans.configuration(options.config)
        self.context = self.configuration.context_slices

    # ---- files ---------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.model_dir / name

    def write_model_folder(self) -> None:
        if self.dist.is_main:
            self.model_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.model_dir)
            write_json(self.path("plans.json"), self.plans.raw)
            settings = {
                "plans": self.plans.name,
                "fusion": self.options.fusion,
                "head": self.options.head,
                "config": self.options.config,
                "fold": self.options.fold,
                "train_cases": self.train_ids,
                "val_cases": self.val_ids,
            }
            write_json(self.path("model.json"), settings)

    def checkpoint_state(self, stage: str, step: int, optimizers, schedulers, best: float, done: bool) -> dict:
        return {
            "fusion": self.options.fusion,
            "head": self.options.head,
            "config": self.options.config,
            "stage": stage,
            "step": step,
            "stage_done": done,
            "best": best,
            "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
            "rng": rng_state(),
        }

    def log_event(self, entry: dict) -> None:
        self.history.append(entry)
        if self.dist.is_main:
            with self.path("training_log.jsonl").open("a") as handle:
                handle.write(json.dumps(entry) + "\n")

    def trim_log(self, stage: str, step: int) -> None:
        """After a resume, forget log lines written after the checkpoint we resumed from."""
        path = self.path("training_log.jsonl")
        if not path.is_file():
            return
        order = list(self.model.stages)
        kept = []
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            later_stage = order.index(entry["stage"]) > order.index(stage) if entry["stage"] in order else False
            if not (later_stage or (entry["stage"] == stage and entry["step"] > step)):
                kept.append(entry)
        self.history = kept
        if self.dist.is_main:
            path.write_text("".join(json.dumps(e) + "\n" for e in kept))

    # ---- the loop -----------------------------------------------------------------------
    def run(self) -> TrainResult:
        self.write_model_folder()
        self.cases.unpack()
        stages = stages_to_run(self.model, self.options.stage)
        resume_state = None
        if self.options.resume:
            latest = self.path("checkpoint_latest.pt")
            if not latest.is_file():
                raise TsfnetError(f"{latest}: nothing to resume (no checkpoint yet); run without --resume")
            resume_state = load_checkpoint(latest, self.options.fusion, self.options.head)
            self.trim_log(resume_state["stage"], resume_state["step"])
        elif self.path("checkpoint_latest.pt").is_file() and self.dist.is_main:
            (self.model_dir / "training_log.jsonl").unlink(missing_ok=True)
        with self.stop:
            for stage_name in stages:
                if resume_state is not None and stages.index(stage_name) < self._stage_index(stages, resume_state):
                    continue
                state = resume_state if resume_state is not None and resume_state["stage"] == stage_name else None
                if state is not None and state["stage_done"]:
                    self.model.load_state_dict(state["model"])
                    continue
                stage = registry.get("stage", stage_name)(precision=self.precision)
                self.run_stage(stage, state)
                resume_state = None
        if self.dist.is_main:
            from tsfnet.training.plots import plot_progress

            plot_progress(self.history, self.path("progress.png"))
        return TrainResult(self.model_dir, self.model, self.history)

    @staticmethod
    def _stage_index(stages: list[str], state: dict) -> int:
        return stages.index(state["stage"]) if state["stage"] in stages else 0

    def stage_settings(self, stage: Stage) -> tuple[int, float, str, int]:
        """Steps, lr, schedule and batch size: options over the plans' training.<stage> (or the stage's defaults)."""
        section = self.plans.training_for(stage)
        steps = self.options.steps if self.options.steps is not None else section.steps
        lr = self.options.lr if self.options.lr is not None else section.lr
        batch = self.options.batch_size or section.batch_size or self.configuration.batch_size
        return steps, lr, section.schedule, batch

    def criterion(self, section: StageTraining) -> nn.Module:
        weight = self.training.perceptual_weight
        if not hasattr(self, "_perceptual"):
            self._perceptual = build_perceptual(self.options.perceptual_weights, weight, self.training.perceptual)
            if self._perceptual is not None:
                self._perceptual = self._perceptual.to(self.device)
        return SynthesisCriterion(
            section.reconstruction,
            self.training.rec_weight,
            self._perceptual,
            weight,
            source_reconstruction=self.training.source_reconstruction,
            cycle_weight=self.training.cycle_weight,
        )

    def run_stage(self, stage: Stage, state: dict | None) -> None:
        steps, lr, schedule, batch_size = self.stage_settings(stage)
        if state is None:
            stage.initial_weights(self.model, self.model_dir, self.options.fusion)
        section = self.plans.training_for(stage)
        optimizers = stage.optimizers(self.model, lr, section.weighting_lr)
        if len(optimizers) > 1 and self.dist.enabled:
            raise TsfnetError(f"stage '{stage.name}' alternates several optimizers; train it on one process")
        decay = rate_factor(schedule, steps, lr, section.horizon_steps, section.min_lr)
        schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, decay) for k, o in optimizers.items()}
        start, best = 0, -float("inf")
        if state is not None:
            self.model.load_state_dict(state["model"])
            for key, optimizer in optimizers.items():
                saved = len(state["optimizers"][key]["param_groups"])
                if saved != len(optimizer.param_groups):
                    raise TsfnetError(
                        f"the checkpoint's stage '{stage.name}' trained {saved} rate group(s), the plans now give "
                        f"{len(optimizer.param_groups)}: training.{stage.name}.weighting_lr changed since it started; "
                        "restore it or train afresh"
                    )
                optimizer.load_state_dict(state["optimizers"][key])
                schedulers[key].load_state_dict(state["schedulers"][key])
            restore_rng(state["rng"])
            start, best = int(state["step"]), float(state["best"])
        network = self.dist.wrap(self.model, self.device)
        if self.options.compile:
            network = torch.compile(network)
        criterion = self.criterion(self.plans.training_for(stage)) if stage.uses_criterion else None
        workers = self.options.num_workers if self.options.num_workers is not None else self.training.num_workers
        loader = TaskBatchLoader(
            self.cases,
            self.configuration.patch_size,
            batch_size,
            section.sampler or stage.sampling,
            seed=self.seed * 1_000_003 + start * 101 + self.dist.rank,
            context_slices=self.context,
            needs_labels=stage.needs_labels,
            task_sampling=self.training.task_sampling,
            lesion_oversampling=self.training.lesion_oversampling,
            brain_slice_probability=self.training.brain_slice_probability,
        )
        loader.usable = [c for c in loader.usable if c in set(self.train_ids)] or loader.usable
        n_sequences, context = self.model.n_sequences, self.context
        batches = device_batches(
            batch_iterator(loader, self.training.augment, workers, self.seed + start),
            lambda raw: to_batch(raw, n_sequences, context),
            self.device,
        )
        val_every = self.options.val_every or self.training.val_every
        self.model.train()
        running, began, validating_s = LossMeter(stage.name), time.time(), 0.0
        try:
            with make_progress() as progress:
                task = progress.add_task(
                    f"{stage.name}",
                    total=steps,
                    completed=start,
                    info="",
                    visible=(self.options.progress and self.dist.is_main),
                )
                for step in range(start + 1, steps + 1):
                    batch = next(batches)
                    loss = stage.step(network, batch, criterion, optimizers, (step - 1) / steps)
                    for scheduler in schedulers.values():
                        scheduler.step()
                    running.add(loss, step)  # read back only at log points
                    if step % LOG_EVERY == 0 or step == steps:
                        rate = (step - start) / max(time.time() - began, 1e-9)
                        mean = running.mean(step)
                        self.log_event(
                            {
                                "stage": stage.name,
                                "step": step,
                                "loss": mean,
                                "lr": next(iter(schedulers.values())).get_last_lr()[0],
                                "it_s": rate,
                            }
                        )
                        progress.update(task, info=f"loss {mean:.4f}  {rate:.1f} it/s")
                        if step - start == LOG_EVERY:
                            self.announce_duration(stage, steps - step, rate)
                    progress.update(task, completed=step)
                    validate_now = step % val_every == 0 or step == steps
                    if validate_now or self.stop.requested:
                        running.check(step)  # never checkpoint weights a non-finite loss has touched
                    if validate_now:
                        paused = time.time()
                        training_s = paused - began - validating_s
                        best = self.validate_and_save(stage, step, steps, optimizers, schedulers, best, training_s)
                        validating_s += time.time() - paused
                    if self.stop.requested:
                        self.save_and_stop(stage, step, steps, optimizers, schedulers, best)
        finally:
            batches._finish()

    def announce_duration(self, stage: Stage, remaining: int, rate: float) -> None:
        """Say once per stage what the run will take, so a 50-hour CPU run is not a surprise."""
        seconds = remaining / max(rate, 1e-9)
        if seconds >= 60:
            hours, minutes = divmod(round(seconds / 60), 60)
            took = f"{hours} h {minutes} min" if hours else f"{minutes} min"
            log.info(
                f"{stage.name}: about {took} for the remaining {remaining} steps at {rate:.2f} it/s on "
                f"{self.device.type}; --steps N shortens it, Ctrl-C stops with a checkpoint to --resume from"
            )

    def save_and_stop(self, stage: Stage, step: int, steps: int, optimizers, schedulers, best: float) -> None:
        """After SIGINT / SIGTERM: the step is finished; keep it, and say how to go on."""
        latest = self.path("checkpoint_latest.pt")
        if self.dist.is_main:
            state = self.checkpoint_state(stage.name, step, optimizers, schedulers, best, step == steps)
            save_checkpoint(latest, state)
        assert self.stop.signum is not None
        name = signal.Signals(self.stop.signum).name
        raise TrainingInterrupted(
            f"{name}: stopped after {stage.name} step {step}/{steps}; saved {latest}; "
            f"resume with: {self.resume_command()}",
            self.stop.signum,
        )

    def resume_command(self) -> str:
        return resume_command(self.command)

    def validate_and_save(
        self, stage: Stage, step: int, steps: int, optimizers, schedulers, best: float, training_s: float
    ) -> float:
        """`training_s`: this run's seconds in the stage so far without validation (logged as
        `train_s`, for learning curves against time)."""
        metrics: dict[str, float] = {}
        if self.dist.is_main:
            metrics = validate(
                self.model,
                self.cases,
                self.val_ids,
                stage.validation_tasks,
                self.device,
                self.context,
                self.configuration.inference_window,
                segmentation=stage.needs_labels,
                labels=self.plans.labels,
                precision=self.precision,
                slices_per_case=self.training.val_slices,
            )
            scores = {f"val_{k}": v for k, v in metrics.items()}
            self.log_event({"stage": stage.name, "step": step, "train_s": round(training_s, 2), **scores})
            score = metrics.get("dice", metrics.get("psnr", -float("inf")))
            done = step == steps
            improved = score > best
            best = max(best, score)
            state = self.checkpoint_state(stage.name, step, optimizers, schedulers, best, done)
            if improved and stage.keeps_best:
                save_checkpoint(self.path("checkpoint_best.pt"), state)
            if done:
                save_checkpoint(stage_checkpoint(self.model_dir, stage.name), state)
                if not self.path("checkpoint_best.pt").is_file():
                    save_checkpoint(self.path("checkpoint_best.pt"), state)
            # Last, so a run killed in between resumes from the previous step and writes them again.
            save_checkpoint(self.path("checkpoint_latest.pt"), state)
        self.dist.barrier()
        return best


def train(options: TrainOptions) -> TrainResult:
    return Runner(options).run()
