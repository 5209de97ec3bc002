"""`cocoa-jax sweep`: run (or resume) the paper's Section 4.1 protocol on every device and host."""
from __future__ import annotations

import argparse
import json
import os
import sys

from cocoa_jax.commands.errors import UsageError, flag_errors

ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


def config_fields_help() -> str:
    """The config fields `--set` (and `--config`) accept, each with its default and JSON type, read
    from the config table (`SweepConfig`'s fields and `FIELD_TYPES`): never a copy that can drift."""
    import dataclasses

    from cocoa_jax.sweep.config import FIELD_TYPES, SweepConfig, digits_reduced

    def shown(value) -> str:
        return json.dumps(value, separators=(",", ":"))

    reduced, paper = digits_reduced().to_dict(), SweepConfig().to_dict()
    names = [field.name for field in dataclasses.fields(SweepConfig)]
    width = max(map(len, names))
    lines = ["config fields (--set FIELD=JSON, or keys of --config FILE): default of the reduced digits "
             "protocol; --paper's where it differs; JSON type"]
    for name in names:
        default = shown(reduced.get(name))
        if shown(paper.get(name)) != default:
            default += f"; --paper: {shown(paper.get(name))}"
        lines.append(f"  {name:<{width}}  {default}  ({FIELD_TYPES[name][1]})")
    lines.append("a dotted FIELD changes one entry of a table: --set methods.rise.n_masks=2000")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # the field table keeps its lines
    parser.epilog = config_fields_help()
    parser.add_argument("run_dir", help="output directory; re-running the same command resumes")
    parser.add_argument("--config", help="JSON file of SweepConfig fields (default: the reduced digits protocol)")
    parser.add_argument("--paper", action="store_true",
                        help="start from the paper's full defaults instead of the reduced digits protocol")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                        help='override a config field, e.g. --set seeds=[0,1] --set encoder=digits; a dotted '
                             'path changes one entry of a table and keeps the rest: --set methods.rise.n_masks=2000 '
                             '(--set \'methods={...}\' replaces the whole methods table)')
    parser.add_argument("--devices", type=int, default=None, metavar="N",
                        help="devices of this process to use (default: all; on a CPU, one forced host device "
                             "per core, set before JAX starts)")
    parser.add_argument("--num-processes", type=int, default=None, metavar="P",
                        help=f"multi-host: number of processes (or ${ENV_NUM_PROCESSES})")
    parser.add_argument("--process-id", type=int, default=None, metavar="I",
                        help=f"multi-host: this process's index in [0, P) (or ${ENV_PROCESS_ID})")
    parser.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                        help=f"multi-host: process 0's address (or ${ENV_COORDINATOR})")
    parser.add_argument("--init-timeout", type=float, default=None, metavar="SECONDS",
                        help="multi-host: seconds to wait for the coordinator and every process to join "
                             "(default 90); then one error line and exit status 2")
    from cocoa_jax import compile_cache

    compile_cache.add_argument(parser, auto="RUN_DIR/compile_cache")
    parser.add_argument("--max-units", type=int, default=None, help="stop after this many units (per process)")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines")
    parser.add_argument("--report", action="store_true", help="write the report when done (process 0)")


def build_config(args):
    """The SweepConfig of the command line; every mistake is a UsageError naming the field."""
    from cocoa_jax.commands.checks import image_encoder
    from cocoa_jax.models import input_shape_of
    from cocoa_jax.sweep.config import SweepConfig, apply_overrides, describe_methods, digits_reduced

    if args.config:
        if not os.path.isfile(args.config):
            raise UsageError(f"--config {args.config!r} is not a file")
        try:
            with open(args.config) as fh:
                base = json.load(fh)
        except (OSError, ValueError) as err:
            raise UsageError(f"--config {args.config!r} is not valid JSON ({err})") from None
        if not isinstance(base, dict):
            raise UsageError(f"--config {args.config!r} must hold a JSON object of config fields")
    else:
        base = (SweepConfig() if args.paper else digits_reduced()).to_dict()
    with flag_errors(None):
        data = apply_overrides(base, args.set)
    before = base.get("methods", SweepConfig().methods)
    dropped = [name for name in (before if isinstance(before, dict) else {})
               if name not in (data.get("methods") or {})]
    with flag_errors(None, ValueError, TypeError):
        config = SweepConfig.from_dict(data)
        image_encoder("config field `encoder`", config.encoder)
        # Option values need the image shape: the encoder's, read without loading weights.
        image_shape = input_shape_of(config.encoder, config.encoder_dir)
        if image_shape is not None:
            config.check_method_values(image_shape)
    if dropped:  # a whole-table --set methods={...} replaced the table: say what is left out
        print(f"cocoa-jax sweep: {describe_methods(config.methods, dropped)}", file=sys.stderr)
    return config


def _distributed_settings(args):
    """(coordinator, num_processes, process_id) from the flags or the standard variables."""
    def from_env(value, name, cast):
        if value is not None or name not in os.environ:
            return value
        try:
            return cast(os.environ[name])
        except ValueError:
            raise UsageError(f"${name}={os.environ[name]!r} is not valid") from None

    coordinator = from_env(args.coordinator, ENV_COORDINATOR, str)
    num_processes = from_env(args.num_processes, ENV_NUM_PROCESSES, int)
    process_id = from_env(args.process_id, ENV_PROCESS_ID, int)
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise UsageError("multi-host needs all of --coordinator HOST:PORT, --num-processes P and --process-id I")
    if not any(given):
        return None
    if num_processes < 1:
        raise UsageError(f"--num-processes must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise UsageError(f"--process-id must be in [0, {num_processes}), got {process_id}")
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--coordinator must be HOST:PORT, got {coordinator!r}")
    return coordinator, num_processes, process_id


def _cost_preview(config) -> None:
    """Passes per method and explicand, evaluation included, before the work (stderr; no probe:
    the encoder loads inside the sweep). Silenced by --no-progress."""
    from cocoa_jax import cost, methods, models

    directory = None if config.encoder_dir is None else os.path.expanduser(config.encoder_dir)
    shape = models.input_shape_of(config.encoder, directory)
    if shape is None:
        return
    options = {m: methods.with_profile(config.estimators, m, o) for m, o in config.methods.items()}
    per_class = config.explicands_per_class * len(config.seeds)
    explicands, where = ((per_class * len(config.classes), "in all") if config.classes
                         else (per_class, "per class"))
    lines = cost.pass_lines(options, shape, explicands=explicands, where=where, eval_steps=config.eval_steps,
                            maps=len(config.targets), references=int(bool(config.include_random)))
    print("\n".join(lines), file=sys.stderr, flush=True)


def check_arguments(args, config) -> None:
    """Everything that can be checked before JAX starts and before any work."""
    from cocoa_jax.commands.checks import output_location
    from cocoa_jax.sweep import inputs
    from cocoa_jax.sweep.config import check_encoder_fields, diff_fields

    if args.devices is not None and args.devices < 1:
        raise UsageError(f"--devices must be a positive integer, got {args.devices}")
    if args.max_units is not None and args.max_units < 1:
        raise UsageError(f"--max-units must be a positive integer, got {args.max_units}")
    if args.init_timeout is not None and not 0 < args.init_timeout < float("inf"):
        raise UsageError(f"--init-timeout must be a positive number of seconds, got {args.init_timeout:g}")
    try:  # the rules live with the code that resolves the sources (sweep.inputs)
        inputs.check_encoder_source(config)
        inputs.check_dataset_source(config)
        check_encoder_fields(config)  # encoder_dir vs encoder, input size vs data, before any work
    except ValueError as err:
        raise UsageError(str(err)) from None
    if os.path.exists(args.run_dir) and not os.path.isdir(args.run_dir):
        raise UsageError(f"RUN_DIR {args.run_dir!r} exists and is not a directory")
    output_location("RUN_DIR", args.run_dir)  # writable (or creatable), before any work
    stored_path = os.path.join(args.run_dir, "config.json")
    if os.path.exists(stored_path):
        try:
            with open(stored_path) as fh:
                stored = json.load(fh)["identity"]["config"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UsageError(f"{stored_path} is damaged ({type(err).__name__}); use a new run directory") from None
        differences = diff_fields(stored, config.result_fields())
        if differences:
            raise UsageError(f"{args.run_dir} holds a run of another config; differs in: {'; '.join(differences)}. "
                             f"Results never mix: use a new run directory (or the old settings)")
    from cocoa_jax import compile_cache

    with flag_errors(None):
        compile_cache.check_flag(args.compile_cache, allow_auto=True)


def _join_job(coordinator: str, num_processes: int, process_id: int, timeout: float | None) -> None:
    """Join the jax.distributed job, or end the process with ONE error line and status 2 within
    `timeout` s: JAX itself would wait minutes and then abort (SIGABRT, a fatal log)."""
    from cocoa_jax import distributed
    from cocoa_jax.commands.errors import error_line

    def give_up(message: str) -> None:  # from the watchdog thread: the main thread is stuck in JAX
        print(error_line("sweep", message), file=sys.stderr, flush=True)
        os._exit(2)

    with flag_errors(None, distributed.DistributedInitError):
        distributed.initialize_distributed(coordinator, num_processes, process_id, on_timeout=give_up,
                                        initialization_timeout=timeout or distributed.DEFAULT_INIT_TIMEOUT)


def _finished_detail(run_dir: str) -> str:
    """What an interrupt line adds: the units saved so far (counted when the signal arrives)."""
    from cocoa_jax.sweep.runner import count_finished

    return (f"{count_finished(run_dir) or 0} unit(s) of the run are finished and saved in {run_dir}; "
            f"re-run the same command to resume")


def run(args) -> int:
    from cocoa_jax import interrupt

    interrupt.set_detail(lambda: _finished_detail(args.run_dir))  # from the start: Ctrl-C can come any time
    config = build_config(args)
    check_arguments(args, config)
    distributed = _distributed_settings(args)
    from cocoa_jax.meshes import use_every_core

    use_every_core(args.devices)
    from cocoa_jax import phases

    phases.reached("load")  # the interrupt detail is set: a signal from here on reports the units
    if distributed is not None:
        _join_job(*distributed, args.init_timeout)

    import jax

    from cocoa_jax.models import ModelDirError
    from cocoa_jax.sweep import run_sweep
    from cocoa_jax.sweep.runner import ProcessMismatch
    from cocoa_jax.sweep.store import RunDirMismatch

    if not args.no_progress:
        _cost_preview(config)
    try:  # a damaged or missing model / data file: one line
        with flag_errors(None, RunDirMismatch, ProcessMismatch, ModelDirError, FileNotFoundError):
            result = run_sweep(config, args.run_dir, progress=not args.no_progress, max_units=args.max_units,
                               devices=args.devices,
                               # None: the cache `cocoa_jax.compile_cache` set up (the user cache by default)
                               compile_cache=None if args.compile_cache in (None, "none") else args.compile_cache)
    except jax.errors.JaxRuntimeError as err:
        if distributed is None:
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise UsageError(f"the jax.distributed runtime failed in process {distributed[2]} of {distributed[1]} "
                         f"(coordinator {distributed[0]}): {first}") from None
    except KeyboardInterrupt:  # in-process `main([...])`; the console command exits in cocoa_jax.interrupt
        print(interrupt.message(), file=sys.stderr)
        return 130
    where = f"process {result.process_index}/{result.process_count}, {result.num_devices} device(s)"
    print(f"run {result.config_hash} [{where}]: computed {len(result.computed)} unit(s), "
          f"{len(result.skipped)} already finished, {result.seconds:.1f} s -> {result.run_dir}")
    if result.probe_accuracy is not None:
        print(f"linear probe accuracy (held-out split): {result.probe_accuracy:.4f}")
    if args.report and result.process_index == 0:
        from cocoa_jax.sweep.report import write_report
        paths = write_report(args.run_dir)
        print("report:", ", ".join(paths.values()))
    return 0
