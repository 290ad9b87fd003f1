"""The Trainer: one loop for every process and preset.

It turns a :class:`RunConfig` into a run: corpus → tokenizer → packed batches → model →
optimizer, then steps, evaluating the held-out bound, sampling and checkpointing on their
cadences, and emitting :mod:`events <ldlm_engine.events>` to every sink (``metrics.jsonl``
when a run directory is given, plus whatever the CLI or TUI adds).

Control: ``request_pause/resume/stop`` from another thread; ``control.json`` in the run
directory from another process (``ldlm runs stop``); SIGINT/SIGTERM/SIGHUP when ``run`` is
called on the main thread. All of them act between steps, and a stop always checkpoints.

EMA (``train.ema``): evaluations, samples, live snapshots and the checkpoint's model for
inference use the averaged weights (:mod:`ldlm_engine.ema`); training continues on the raw ones.

Exact resume: the checkpoint holds the weights (and their average), the optimizer, the global
and noise RNG states and the data position, so a resumed run reproduces the uninterrupted one
step for step on CPU.

DDP: under ``torchrun`` (``WORLD_SIZE`` > 1) each rank trains on its own slice of every global
batch of ``batch_size * world_size`` windows; only rank 0 writes the run directory and emits
events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable

import torch
from torch.profiler import record_function

from .adaptation import load_init_weights, source_tokenizer
from .checkpoint import (
    Checkpoint,
    checkpoint_meta,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from .checkpoint_checks import Fit, model_spec
from .config import RunConfig, training_phase
from .corpora import load_corpus
from .data import Batcher, count_chars, eval_windows
from .ema import EMA, ema_spec
from .errors import CheckpointError, RunError
from .evaluation import BoundEstimate, estimate_nll
from .events import (
    CheckpointEvent,
    EvalEvent,
    Event,
    SampleEvent,
    StatusEvent,
    StepEvent,
)
from .fileio import atomic_write_text
from .model import DiffusionTransformer
from .runs import RunDir
from .runtime import TOKENIZER_FILE, autocast_dtype, build_model, prepare_data, resolve_device
from .sampling import final_frame
from .tokenizers import load_tokenizer


def lr_at(step: int, cfg, total_steps: int) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio * lr`` (or constant)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr_ratio * cfg.lr
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _write_error(e: BaseException) -> RunError | None:
    """A run directory that cannot be written (disk full, read-only ...) as one line."""
    if not isinstance(e, OSError):
        return None
    where = e.filename or "the run directory"
    if isinstance(where, str) and os.path.basename(where).startswith(".tmp-"):
        where = os.path.dirname(where)  # an atomic write's temporary file: name the folder
    return RunError(f"cannot write {where}: {e.strerror or e}; training stopped")


def _check_optimizer_shapes(optimizer: torch.optim.Optimizer) -> None:
    """Adam's moments must match their parameters (``load_state_dict`` does not check; a
    wrong shape would only fail at the next step). Raises ValueError."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for v in optimizer.state.get(p, {}).values():
                if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape != p.shape:
                    raise ValueError("its optimizer state does not fit the model's parameters")


class Trainer:
    """Runs one training job; see the module docstring for control and resume semantics."""

    def __init__(
        self,
        config: RunConfig,
        *,
        run_dir: RunDir | None = None,
        sinks: Iterable[Callable[[Event], None]] = (),
        resume: bool = False,
        text: str | None = None,
        handle_signals: bool = True,
        data: tuple | None = None,
    ):
        self.cfg = config.copy()
        self.run_dir = run_dir
        self.sinks = list(sinks)
        self.resume = resume
        self._text = text
        self._data = data  # (tokenizer, splits) a RunPlan already prepared from this config
        self.handle_signals = handle_signals
        self._stop = threading.Event()
        self._pause = threading.Event()
        self.stop_reason = ""
        self._last_saved = -1
        self.state = "created"
        self.step = 0
        self.best_val_bpc: float | None = None
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.is_main = self.rank == 0
        self.model: DiffusionTransformer | None = None
        self.ema: EMA | None = None  # train.ema's average of the weights (None: off)
        self._snap_lock = threading.Lock()  # live-weight snapshots (snapshot_weights)
        self._snap_waiting: list[tuple[threading.Event, list]] = []
        self._in_run = False
        self.load_note = ""
        self.device = resolve_device(self.cfg.train.device)

    # ------------------------------------------------------------------ control
    def request_stop(self, reason: str = "requested") -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
        self._stop.set()
        self._pause.clear()

    def request_pause(self) -> None:
        self._pause.set()

    def request_resume(self) -> None:
        self._pause.clear()

    @property
    def paused(self) -> bool:
        return self._pause.is_set()

    # ------------------------------------------------------------------ events
    def emit(self, event: Event) -> None:
        if not self.is_main:
            return
        if self.run_dir is not None:
            self.run_dir.append_event(event.to_dict())
        for sink in self.sinks:
            sink(event)

    def _status(self, state: str, message: str = "") -> None:
        self.state = state
        if not self.is_main:
            return
        if self.run_dir is not None:
            self.run_dir.write_status(state, step=self.step, message=message)
        self.emit(StatusEvent(step=self.step, state=state, message=message))

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg = self.cfg
        if self.world_size > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            torch.distributed.init_process_group(backend)
        tok = None
        if self.resume and self.run_dir is not None:
            tok = load_tokenizer(self.run_dir.path_of(TOKENIZER_FILE))
        elif cfg.train.init_from and self._data is None:
            tok = source_tokenizer(cfg)  # the weights it starts from read these ids
        if self._data is not None and tok is None:
            self.tokenizer, self.splits = self._data
            self._data = None
        else:
            if self._text is None and cfg.data.tokenizer != "char":
                # Read once here: the exact characters per evaluated token need the text too.
                self._text = load_corpus(cfg.data.source, max_mb=cfg.data.max_corpus_mb).text
            self.tokenizer, self.splits = prepare_data(cfg, tok, self._text)
        torch.manual_seed(cfg.train.seed)  # same initial weights on every rank and every rerun
        self.model, self.process = build_model(cfg, self.tokenizer)
        if cfg.train.init_from and not self.resume:
            self.load_note = load_init_weights(self.model, cfg)
        self.model.to(self.device)
        self.process.to(self.device)
        self.amp_dtype = autocast_dtype(cfg.train.precision, self.device)
        t = cfg.train
        self.ema = EMA(self.model, t.ema) if t.ema else None
        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        wd = t.weight_decay if t.optimizer == "adamw" else 0.0
        groups = [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]
        opt_cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
        fused_ok = self.device.type in ("cuda", "cpu")
        self.optimizer = opt_cls(
            groups, lr=t.lr, betas=(t.beta1, t.beta2), **({"fused": True} if fused_ok else {})
        )
        self.batcher = Batcher(
            self.splits.train,
            cfg.model.seq_len,
            t.batch_size,
            seed=t.seed,
            rank=self.rank,
            world_size=self.world_size,
        )
        self.total_steps = self._plan_steps()
        self.noise_gen = torch.Generator(self.device).manual_seed(
            t.seed * 1_000_003 + 17 + self.rank
        )
        torch.manual_seed(t.seed + 1 + self.rank)  # dropout differs per rank
        self.eval_set = eval_windows(self.splits.val, cfg.model.seq_len, t.eval_tokens)
        self.chars_per_token = self._eval_chars_per_token() if self.is_main else 1.0
        self._text = None  # encoded and counted: training does not hold a copy of the corpus
        self.elapsed_before = 0.0
        self.tokens_seen = 0
        if self.resume:
            self._load_state()
        elif self.run_dir is not None and self.is_main:
            self.tokenizer.save(self.run_dir.path_of(TOKENIZER_FILE))
            # The resolved config (vocab size included) is what rebuilds the model later.
            atomic_write_text(self.run_dir.config_path, self.cfg.to_json() + "\n")
        self.ddp_model = self.model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = DDP(self.model, device_ids=ids)
        if t.compile:
            try:
                self.ddp_model = torch.compile(self.ddp_model)
            except Exception:  # compile is an optimisation: fall back silently to eager
                self.ddp_model = self.model

    def _plan_steps(self) -> int:
        t = self.cfg.train
        plans = []
        if t.max_steps is not None:
            plans.append(t.max_steps)
        if t.epochs is not None:  # the steps that cover exactly that many epochs' windows
            windows = t.epochs * self.batcher.n_windows
            plans.append(-(-windows // self.batcher.global_batch_size))
        return max(1, min(plans))

    def _epoch_windows_left(self) -> int | None:
        """Windows left in an epoch budget, so the last batch stops exactly at the end of
        ``train.epochs`` (one process; DDP ranks keep whole batches: at most one over)."""
        t = self.cfg.train
        if t.epochs is None or self.world_size > 1:
            return None
        return t.epochs * self.batcher.n_windows - self.batcher.windows_done

    # ------------------------------------------------------------------ checkpoints
    def _extra_tensors(self) -> dict[str, torch.Tensor]:
        extra = {"rng_torch": torch.get_rng_state(), "rng_noise": self.noise_gen.get_state()}
        if self.device.type == "cuda":
            extra["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return extra

    def save(self) -> str | None:
        """Checkpoint now (rank 0); returns the checkpoint path."""
        if self.run_dir is None or not self.is_main:
            return None
        meta = checkpoint_meta(
            self.cfg.to_dict(),
            step=self.step,
            epoch=self.batcher.epoch_progress,
            data_position=self.batcher.state_dict(),
            elapsed_s=self.elapsed_before + (time.perf_counter() - self._t0),
            tokens_seen=self.tokens_seen,
            best_val_bits_per_char=self.best_val_bpc,
            total_steps=self.total_steps,
        )
        path = save_checkpoint(
            self.run_dir.checkpoints_dir,
            model_state=self.model.state_dict(),
            optimizer_state=self.optimizer.state_dict(),
            extra_tensors=self._extra_tensors(),
            meta=meta,
            ema_tensors=self.ema.tensors() if self.ema is not None else None,
        )
        self._last_saved = self.step
        prune_checkpoints(self.run_dir.checkpoints_dir, self.cfg.train.keep_checkpoints)
        self.emit(CheckpointEvent(step=self.step, path=str(path)))
        return str(path)

    def _load_state(self) -> None:
        assert self.run_dir is not None
        m, rng = self.model, ("rng_torch", "rng_noise")
        fit = Fit(model_spec(m), rng, self.cfg.to_dict(), self._apply, ema_spec(m))
        try:
            ck = load_checkpoint(self.run_dir.checkpoints_dir, fit=fit)
        except CheckpointError:
            if self.run_dir.latest_checkpoint_step() is None:
                return  # stopped before its first checkpoint: start from scratch
            raise
        self.load_note = ck.note  # the newest checkpoint was incomplete: say which one loaded

    def _apply(self, ck: Checkpoint) -> None:
        """Put a verified checkpoint to use; raises (an APPLY_ERRORS type, or CheckpointError)
        when it does not fit, so that load_checkpoint treats it as damaged."""
        self.model.load_state_dict(ck.model_state)  # names, shapes and dtypes checked
        if self.ema is not None:
            self.ema.load(ck.ema_state)
        if ck.optimizer_state is not None:
            self.optimizer.load_state_dict(ck.optimizer_state)
            _check_optimizer_shapes(self.optimizer)
        self.step = ck.step
        position = ck.meta.get("data_position")
        if not isinstance(position, dict):
            raise CheckpointError(f"checkpoint {ck.path} is damaged: no data position")
        self.batcher.load_state_dict(position)
        torch.set_rng_state(ck.extra_tensors["rng_torch"])
        try:
            self.noise_gen.set_state(ck.extra_tensors["rng_noise"])
        except RuntimeError:  # resumed on another kind of device: continue, not bit-exact
            self.noise_gen.manual_seed(self.cfg.train.seed * 1_000_003 + 17 + self.step)
        if "rng_cuda" in ck.extra_tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(ck.extra_tensors["rng_cuda"], self.device)
        self.elapsed_before = float(ck.meta.get("elapsed_s", 0.0))  # typed by check_meta
        self.tokens_seen = int(ck.meta.get("tokens_seen", 0))
        self.best_val_bpc = ck.meta.get("best_val_bits_per_char")

    # ------------------------------------------------------------------ evaluation, samples
    def _eval_chars_per_token(self) -> float:
        """Exact characters per token of the evaluated windows (see ``data.count_chars``)."""
        text = self._text
        if text is None and self.tokenizer.kind != "char":  # char: one token per character
            text = load_corpus(self.cfg.data.source, max_mb=self.cfg.data.max_corpus_mb).text
        n_train = int(self.splits.train.numel())
        total = n_train + int(self.splits.val.numel())
        chars = count_chars(self.tokenizer, text or "", n_train, self.eval_set, total)
        return chars / self.eval_set.numel()

    def _averaged(self):
        """The model holds the weights to evaluate and sample: the average when EMA is on."""
        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    def evaluate(self) -> BoundEstimate:
        with self._averaged():
            return estimate_nll(
                self.model,
                self.process,
                self.eval_set,
                chars_per_token=self.chars_per_token,
                samples=self.cfg.train.eval_samples,
                batch_size=self.cfg.train.batch_size,
                seed=self.cfg.train.seed,
                device=self.device,
                autocast_dtype=self.amp_dtype,
            )

    def sample(self) -> SampleEvent:
        """A periodic sample, drawn with the process's faithful ancestral sampler.

        For the masked process that is random-order unmasking (MDLM's reverse process), not
        confidence-ordered decoding: a young model is most confident about spaces, and
        revealing those first feeds back into a sequence of nothing but spaces, which would
        hide what the model has actually learned.
        """
        sampler = "random" if self.process.kind == "mask" else "auto"
        if self.cfg.sample.sampler == "speculative":  # exact samples of the ar head
            sampler = "speculative"
        sc = dataclasses.replace(
            self.cfg.sample,
            sampler=sampler,
            length=min(self.cfg.train.sample_length, self.cfg.model.seq_len),
            seed=self.step,
            temperature=self.cfg.train.sample_temperature,
        )
        with self._amp(), self._averaged():
            frame = final_frame(self.model, self.process, self.tokenizer, sc, device=self.device)
        return SampleEvent(step=self.step, text=self.tokenizer.decode(frame.tokens), nfe=frame.nfe)

    def _amp(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------ the loop
    def _due(self, every: int, every_epochs: int, epoch_before: int) -> bool:
        if every and self.step % every == 0:
            return True
        if every_epochs and self.batcher.epoch > epoch_before:
            return self.batcher.epoch % every_epochs == 0
        return False

    def _poll_external(self) -> None:
        if self.run_dir is None or not self.is_main:
            return
        action = self.run_dir.poll_control()
        if action == "stop":
            self.request_stop("stop requested through the run directory")
        elif action == "pause":
            self.request_pause()
        elif action == "resume":
            self.request_resume()

    def _sync_stop(self) -> bool:
        """All ranks agree to stop if any rank (in practice rank 0) was asked to."""
        if self.world_size == 1:
            return self._stop.is_set()
        flag = torch.tensor([1.0 if self._stop.is_set() else 0.0], device=self.device)
        torch.distributed.all_reduce(flag)
        return bool(flag.item() > 0)

    def _wait_while_paused(self) -> None:
        if not self._pause.is_set() or self._stop.is_set():
            return
        self._status("paused")
        paused_at = time.perf_counter()
        while self._pause.is_set() and not self._stop.is_set():
            time.sleep(0.05)
            self._serve_snapshots()
            self._poll_external()
            if self.run_dir is not None and self.is_main:
                self.run_dir.heartbeat(self.step)
        self._t0 += time.perf_counter() - paused_at  # paused time is not training time
        if not self._stop.is_set():
            self._status("resumed")

    # ------------------------------------------------------------------ live weights
    def snapshot_weights(self, timeout: float = 60.0) -> tuple[int, dict[str, torch.Tensor]] | None:
        """``(step, a CPU copy of the model's weights)`` taken between two optimizer steps
        (their average when EMA is on).

        For sampling from a run while it trains in this process (the app's Generate tab):
        another thread asks and waits; the training loop copies at its next step boundary (at
        once when it is not training). None before the model exists or when no step boundary
        comes within ``timeout`` seconds.
        """
        done, box = threading.Event(), []
        with self._snap_lock:
            if self.model is None:
                return None
            if not self._in_run:
                return self._copy_weights()
            self._snap_waiting.append((done, box))
        return box[0] if done.wait(timeout) and box else None

    def _serve_snapshots(self) -> None:
        """Answer waiting :meth:`snapshot_weights` calls (one list check a step otherwise)."""
        if not self._snap_waiting:
            return
        with self._snap_lock:
            waiting, self._snap_waiting = self._snap_waiting, []
            snap = self._copy_weights() if waiting and self.model is not None else None
        for done, box in waiting:
            if snap is not None:
                box.append(snap)
            done.set()

    def _copy_weights(self) -> tuple[int, dict[str, torch.Tensor]]:
        if self.ema is not None:
            return self.step, self.ema.state_dict(self.model)  # type: ignore[arg-type]
        state = self.model.state_dict()  # type: ignore[union-attr]
        return self.step, {k: v.detach().to("cpu", copy=True) for k, v in state.items()}

    def _install_signals(self):
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return {}
        old = {}

        def handler(signum, _frame):
            self.request_stop(f"signal {signal.Signals(signum).name}")

        for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                old[sig] = signal.signal(sig, handler)
        return old

    def run(self) -> str:
        """Train until done or stopped; returns the final state (finished/stopped/failed)."""
        old_handlers = self._install_signals()
        self._t0 = time.perf_counter()
        with self._snap_lock:
            self._in_run = True  # from now on the weights change: snapshots wait for a step
        try:
            if self.run_dir is not None and self.is_main:
                self.run_dir.acquire_lock()
            if self.model is None:
                self.setup()
            return self._loop()
        except BaseException as e:
            error = _write_error(e) if self.run_dir is not None else None
            if self.state not in ("created", "finished", "stopped", "failed"):
                msg = str(error or e).splitlines()[0] if str(error or e) else type(e).__name__
                with contextlib.suppress(Exception):
                    self._status("failed", msg)
            if error is not None:
                raise error from None
            raise
        finally:
            with self._snap_lock:
                self._in_run = False
            self._serve_snapshots()
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
            if self.run_dir is not None and self.is_main:
                with contextlib.suppress(Exception):
                    self.run_dir.release_lock()

    def train_step(self, lr: float) -> tuple[torch.Tensor, torch.Tensor | float]:
        """One optimizer step on the next batch at learning rate ``lr``: (loss, gradient norm;
        0.0 without clipping), left on the device. The loop and benchmarks/train_throughput.py
        time this same call; its phases are labelled for torch.profiler (nearly free when it
        is off)."""
        t = self.cfg.train
        with record_function("ldlm.data"):
            x0 = self.batcher.next_batch(self._epoch_windows_left())
            x0 = x0.to(self.device, non_blocking=True)
        self.process.progress = self.step / self.total_steps  # for block_warmup
        with record_function("ldlm.forward"), self._amp():
            loss = self.process.loss(self.ddp_model, x0, self.noise_gen)
        with record_function("ldlm.backward"):
            loss.backward()
        with record_function("ldlm.optimizer"):
            norm: torch.Tensor | float = 0.0
            if t.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.step)
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens_seen += t.batch_size * self.cfg.model.seq_len * self.world_size
        return loss, norm

    def _loop(self) -> str:
        t = self.cfg.train
        precision = "bf16" if self.amp_dtype is not None else "fp32"
        note = f"; {self.load_note}" if self.load_note else ""
        self._status(
            "resumed" if self.resume and self.step else "started",
            f"device {self.device.type}, {precision}, {self.model.num_parameters():,} parameters"
            + note,
        )
        model = self.ddp_model
        model.train()
        tokens_per_step = t.batch_size * self.cfg.model.seq_len * self.world_size
        window_loss: torch.Tensor | float = 0.0
        window_n = 0
        grad_norm: torch.Tensor | float = 0.0
        window_t = time.perf_counter()
        last_good_step = self.step
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        while self.step < self.total_steps:
            self._poll_external()
            self._wait_while_paused()
            if self._sync_stop():
                break
            self._serve_snapshots()
            lr = lr_at(self.step, t, self.total_steps)
            epoch_before = self.batcher.epoch
            loss, grad_norm = self.train_step(lr)
            # Losses stay on the device between log steps: reading one back every step would
            # make the CPU wait for the GPU, which costs a small model most of its speed.
            window_loss = loss.detach() + window_loss
            window_n += 1
            if self.run_dir is not None and self.is_main:
                self.run_dir.heartbeat(self.step)
            due_ckpt = bool(t.checkpoint_every and self.step % t.checkpoint_every == 0)
            due_log = self.step % max(1, t.log_every) == 0 or self.step == self.total_steps
            if due_log or due_ckpt:  # never log or checkpoint without checking for NaN/inf
                mean_loss = float(window_loss) / window_n
                norm = float(grad_norm)
                if not (math.isfinite(mean_loss) and math.isfinite(norm)):
                    msg = (
                        f"non-finite loss ({mean_loss}) by step {self.step}; stopped without "
                        f"saving, the last good checkpoint is step {last_good_step}"
                    )
                    self._status("failed", msg)
                    return "failed"
            if due_log:
                now = time.perf_counter()
                self.emit(
                    StepEvent(
                        step=self.step,
                        loss=mean_loss,
                        lr=lr,
                        tokens_per_s=window_n * tokens_per_step / max(now - window_t, 1e-9),
                        epoch=round(self.batcher.epoch_progress, 4),
                        elapsed_s=self.elapsed_before + now - self._t0,
                        total_steps=self.total_steps,
                        grad_norm=norm,
                        peak_mem_mb=self._peak_mem_mb(),
                        phase=training_phase(self.cfg, self.step - 1, self.total_steps),
                    )
                )
                window_loss, window_n, window_t = 0.0, 0, time.perf_counter()
            if self.is_main and self._due(t.eval_every, t.eval_every_epochs, epoch_before):
                self._emit_eval()
            if self.is_main and self._due(t.sample_every, t.sample_every_epochs, epoch_before):
                self.emit(self.sample())
            if due_ckpt:
                self.save()
                last_good_step = self.step
            model.train()
        stopped = self.step < self.total_steps
        if window_n and not math.isfinite(float(window_loss)):  # never checkpoint garbage
            self._status("failed", f"non-finite loss by step {self.step}; stopped without saving")
            return "failed"
        if stopped:
            self._status("stopping", self.stop_reason)
            if self._last_saved != self.step:
                self.save()
            self._status("stopped", f"{self.stop_reason}; checkpoint at step {self.step}")
            return "stopped"
        if self.is_main and not (t.eval_every and self.step % t.eval_every == 0):
            self._emit_eval()
        if self._last_saved != self.step:
            self.save()
        self._status("finished", f"{self.step} steps")
        return "finished"

    def _emit_eval(self) -> None:
        est = self.evaluate()
        if self.best_val_bpc is None or est.bits_per_char < self.best_val_bpc:
            self.best_val_bpc = est.bits_per_char
        self.emit(
            EvalEvent(
                step=self.step,
                val_loss=est.nats_per_token,
                val_bits_per_token=est.bits_per_token,
                val_bits_per_char=est.bits_per_char,
                stderr_bits_per_char=est.stderr_bits_per_char,
                exact=est.exact,
                ar_head_bits_per_char=est.ar_head_bits_per_char,
            )
        )

    def _peak_mem_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        except Exception:
            return 0.0
