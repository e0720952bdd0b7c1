"""archlab train, evaluate, generate, sample."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from ..core import ArchlabError
from ._app import SetOption, StoreOption, app, use_store
from ._format import parse_vars


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    spec: Annotated[str | None, typer.Argument(help="A YAML spec file or zoo:NAME (omit with --resume).")] = None,
    data: Annotated[str, typer.Option(help="digits, mnist[:PATH], fashion-mnist[:PATH], cifar10[:PATH], csv:PATH, "
                                           "npy:FOLDER, imdb:PATH, text:PATH|stdlib, seq:TASK.")] = "digits",
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd, adam or adamw.")] = None,
    momentum: Annotated[float | None, typer.Option(help="SGD momentum.")] = None,
    weight_decay: Annotated[float | None, typer.Option()] = None,
    schedule: Annotated[str | None, typer.Option(help="constant, cosine or step.")] = None,
    warmup: Annotated[int | None, typer.Option(help="Linear warm-up steps.")] = None,
    grad_clip: Annotated[float | None, typer.Option(help="Clip the global gradient norm.")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, bf16 or fp16 (autocast).")] = None,
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile the model.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    early_stop: Annotated[int | None, typer.Option(help="Stop after N epochs without improvement.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto.")] = None,
    task: Annotated[str | None, typer.Option(help="classify, classify_mse, regress, language_model, seq2seq, vae or gan (default: the data set's).")] = None,
    target: Annotated[str | None, typer.Option(help="csv: the target column.")] = None,
    crop_padding: Annotated[int | None, typer.Option(help="Augment: random crop with this padding.")] = None,
    hflip: Annotated[bool | None, typer.Option("--hflip/--no-hflip", help="Augment: random horizontal flips.")] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="Classification label smoothing.")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Time budget: stop after this many minutes.")] = None,
    stream: Annotated[bool | None, typer.Option("--stream/--no-stream", help="Stream the data from disk through a "
                      "DataLoader (default: only npy data larger than the memory budget).")] = None,
    workers: Annotated[int | None, typer.Option(help="Reader processes when streaming (default: half the cores, "
                       "at most 4).")] = None,
    set: SetOption = None,
    init_from: Annotated[str | None, typer.Option(help="Start from a run's weights (RUN_ID) or a .safetensors "
                         "file; they match by name and shape, and a table says what loaded.")] = None,
    map: Annotated[list[str] | None, typer.Option("--map", help="Rename --init-from's weights: 'old=new' (a "
                   "prefix or glob; 'old=' drops, e.g. a head to train anew), or hf-gpt2 (repeatable).")] = None,
    partial: Annotated[bool, typer.Option("--partial", help="--init-from: load what fits; skip unused names and "
                       "shape mismatches instead of refusing them.")] = False,
    freeze: Annotated[list[str] | None, typer.Option("--freeze", help="Freeze parameters (a glob on names, e.g. "
                      "'model.0.*'): not trained (repeatable).")] = None,
    bn: Annotated[str | None, typer.Option("--bn", help="frozen: batch-norm layers stay in eval mode (running "
                  "statistics unchanged); train (default).")] = None,
    resume: Annotated[str | None, typer.Option(help="Continue a stopped run from its last checkpoint.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    store: StoreOption = None,
    accumulate: Annotated[int | None, typer.Option(help="Gradient accumulation: K micro-batches of batch-size / K "
                          "per optimizer step.")] = None,
    activation_checkpointing: Annotated[bool, typer.Option("--activation-checkpointing", help="Recompute each "
                                        "repeat copy's forward during backward: less activation memory, about "
                                        "a third more compute; the same results.")] = False,
    nproc: Annotated[int | None, typer.Option(help="Processes per machine, started by torchrun; --batch-size is "
                     "the global batch, split across them.")] = None,
    strategy: Annotated[str | None, typer.Option(help="On several processes: ddp (replicated weights) or fsdp "
                        "(FSDP2: weights, gradients and optimizer state sharded by block).")] = None,
    nnodes: Annotated[int, typer.Option(help="Machines taking part (each runs this command).")] = 1,
    rdzv_endpoint: Annotated[str | None, typer.Option(help="Several machines: HOST:PORT where they meet (c10d "
                             "rendezvous, on the first machine).")] = None,
    rdzv_id: Annotated[str | None, typer.Option(help="Several machines: the same job id on each.")] = None,
    rdzv_timeout: Annotated[float, typer.Option(help="Seconds to wait for the other machines.")] = 120,
) -> None:
    """Train a spec on a data set; every run is recorded in the run store."""
    use_store(store)  # before launching: the ranks inherit $ARCHLAB_STORE
    launching = (nproc or 1) > 1 or nnodes != 1 or rdzv_endpoint is not None
    quiet_cpp = launching and "TORCH_CPP_LOG_LEVEL" not in os.environ and "WORLD_SIZE" not in os.environ
    if quiet_cpp:  # the launcher's own C++ store logs (retries, timeouts) are noise; read at import
        os.environ["TORCH_CPP_LOG_LEVEL"] = "FATAL"
    from ..train import launch, rank_info

    if quiet_cpp:
        del os.environ["TORCH_CPP_LOG_LEVEL"]  # the ranks log as usual
    info = rank_info()
    if nproc is not None or nnodes != 1 or rdzv_endpoint:
        if nproc is not None and nproc < 1:
            raise ArchlabError(f"--nproc: expected at least 1 process per machine. Received: {nproc}")
        if not info.distributed and ((nproc or 1) > 1 or nnodes > 1):
            _check_before_launch(strategy, batch_size, (nproc or 1) * nnodes, accumulate or 1)
            code = launch(_child_argv(ctx), nproc=nproc or 1, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint,
                          rdzv_id=rdzv_id, rdzv_timeout=rdzv_timeout)
            raise typer.Exit(code)
    finished = False
    try:
        run = _train(spec, data, resume, quiet, target, set, dict(
            epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, momentum=momentum,
            weight_decay=weight_decay, schedule=schedule, warmup=warmup, grad_clip=grad_clip,
            precision=precision, compile=compile, seed=seed, early_stop=early_stop, device=device,
            task=task, crop_padding=crop_padding, hflip=hflip, label_smoothing=label_smoothing,
            max_minutes=max_minutes, stream=stream, workers=workers, init_from=init_from, map=map or None,
            partial=partial or None, freeze=freeze or None, bn=bn,
            accumulate=accumulate, strategy=strategy, activation_checkpointing=activation_checkpointing or None))
        finished = True
    except KeyboardInterrupt as e:
        # typer would swallow the interrupt into a bare exit code; say how to go on.
        if info.primary:
            print(f"stopped: {e}" if str(e) else "stopped", file=sys.stderr)
        raise typer.Exit(130) from None
    except ArchlabError:
        if info.primary:
            raise
        raise typer.Exit(2) from None  # rank 0 says it, once
    finally:
        if info.distributed:
            from ..train import shutdown

            shutdown(synchronize=finished)
    if not info.primary:
        return
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in run.test_metrics.items())
    print(f"test  {metrics}")
    print(f"run   {run.run_id}  (best epoch {run.best_epoch}; details: archlab show {run.run_id})")


def _train(spec, data, resume, quiet, target, assignments, settings):  # noqa: ANN001, ANN202
    from ..train import fit
    from ..train import resume as resume_run

    if resume:
        # A resumed run continues with the spec, data and settings it was recorded with; only how
        # the data is read (--stream/--no-stream, --workers) may change: it changes no result.
        io = {k: settings.pop(k) for k in ("stream", "workers", "strategy")}
        given = [f"--{k.replace('_', '-')}" for k, v in settings.items() if v is not None]
        given += ["SPEC"] if spec is not None else []
        given += ["--set"] if assignments else []
        given += ["--target"] if target else []
        if given:
            raise ArchlabError(f"train --resume: a resumed run keeps its recorded spec and settings; drop "
                               f"{', '.join(given)} (or start a new run without --resume)")
        return resume_run(resume, quiet=quiet, **io)
    if spec is None:
        raise ArchlabError("train: give a SPEC (a YAML file or zoo:NAME) or --resume RUN_ID")
    def started(run_id: str) -> None:  # the id first: a run killed in its first epoch can still be found
        print(f"run   {run_id}  recorded; Ctrl-C stops it after the current step, "
              f"`archlab train --resume {run_id}` continues it", file=sys.stderr, flush=True)

    return fit(spec, data=data, quiet=quiet, target=target, vars=parse_vars(assignments), on_start=started,
               **settings)


def _check_before_launch(strategy: str | None, batch_size: int | None, world: int, accumulate: int) -> None:
    """What can be refused before any process starts (the ranks check the rest themselves)."""
    from ..train import STRATEGIES, check_layout

    if strategy is not None and strategy not in STRATEGIES:
        raise ArchlabError(f"--strategy: expected one of {', '.join(STRATEGIES)}. Received: {strategy!r}")
    if batch_size is not None:
        check_layout(batch_size, world, accumulate, where="--batch-size")


def _child_argv(ctx: typer.Context) -> list[str]:
    """This `archlab train` command's arguments, rebuilt from what click parsed, minus the launch
    flags: what every rank runs."""
    from ..train import LAUNCH_FLAGS

    argv = [ctx.info_name or "train"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or param.param_type_name != "option":
            if param.param_type_name == "argument" and value is not None:
                argv.append(str(value))
            continue
        flag = max(param.opts, key=len)
        if flag in LAUNCH_FLAGS or value == param.default:
            continue
        if param.is_flag:
            if param.secondary_opts:
                argv.append(flag if value else max(param.secondary_opts, key=len))
            elif value:
                argv.append(flag)
        elif param.multiple:
            for v in value:
                argv += [flag, str(v)]
        else:
            argv += [flag, str(value)]
    return argv


@app.command("evaluate")
def evaluate_cmd(
    run_id: Annotated[str, typer.Argument(help="A run id (or a unique prefix).")],
    data: Annotated[str | None, typer.Option(help="Another data set (default: the run's own).")] = None,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    store: StoreOption = None,
) -> None:
    """Re-evaluate a saved model."""
    use_store(store)
    from ..train import evaluate

    result = evaluate(run_id, data, split=split)
    # A VAE's loss is its negative ELBO (recon + kl, nats per image): say so where it is printed.
    label = {"loss": "loss (-ELBO)"} if "kl" in result else {}
    metrics = "  ".join(f"{label.get(k, k)} {v:.4f}" for k, v in result.items() if isinstance(v, float))
    print(f"{result['run_id']} on {result['data']} ({split}): {metrics}")


@app.command("generate")
def generate_cmd(
    run_id: Annotated[str, typer.Argument(help="A language-model run (see `archlab runs`).")],
    prompt: Annotated[str, typer.Option(help="Text to continue.")] = "\n",
    max_tokens: Annotated[int, typer.Option(help="How many tokens to generate.")] = 200,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.")] = 0.8,
    top_k: Annotated[int | None, typer.Option(help="Sample among the k most likely tokens.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Use the key/value cache.")] = True,
    store: StoreOption = None,
) -> None:
    """Stream text from a trained language model."""
    use_store(store)
    from ..data import tokenizer_from_dict
    from ..model import generate
    from ..runs import TOKENIZER_FILE, open_store, read_json
    from ..train import load_run_model

    store = open_store()
    net, record = load_run_model(run_id, store=store)
    path = store.artifact(record.run_id, TOKENIZER_FILE)
    if not path.exists():
        raise ArchlabError(f"run {record.run_id} has no {TOKENIZER_FILE}: it was not trained on a text data set")
    tokenizer = tokenizer_from_dict(read_json(path))
    ids = tokenizer.encode(prompt)
    unk = getattr(tokenizer, "unk_id", None)
    if unk is not None and unk in ids:
        print(f"warning: {ids.count(unk)} prompt token(s) are not in the model's vocabulary and read as <unk>",
              file=sys.stderr)
    sys.stdout.write(prompt)
    for token in generate(net, ids, max_tokens, temperature=temperature, top_k=top_k,
                          seed=seed, use_cache=cache):
        sys.stdout.write(tokenizer.decode([token]))
        sys.stdout.flush()
    sys.stdout.write("\n")


@app.command("sample")
def sample_cmd(
    run_id: Annotated[str, typer.Argument(help="A vae or gan run (see `archlab runs`).")],
    n: Annotated[int, typer.Option("--n", "-n", help="How many images to draw.")] = 64,
    out: Annotated[str, typer.Option(help="Where to write the PNG grid.")] = "samples.png",
    seed: Annotated[int, typer.Option(help="Seed of the latent noise.")] = 0,
    scale: Annotated[int, typer.Option(help="Each pixel becomes a scale x scale block.", min=1, max=64)] = 4,
    store: StoreOption = None,
) -> None:
    """Draw images from a trained VAE or GAN and write them as a PNG grid."""
    use_store(store)
    from ..train import sample_run, save_grid

    images = sample_run(run_id, n, seed=seed)
    save_grid(images, out, scale=scale)
    print(f"wrote {n} samples {tuple(images.shape[1:])} to {out}")


