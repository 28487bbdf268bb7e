"""Starting or joining Ray, with the settings this lab relies on, and how much of Ray's own console shows.

Ray's own lines (Ray Train's controller and workers at INFO, Ray Data's per-dataset lines, Tune's status
tables) are off unless `UQA_VERBOSE=1` (the experiment scripts' `--verbose`); the lab's own lines and
every warning stay, and Ray's log files keep everything either way. Progress bars (Ray Data's, and the
Hugging Face loaders' in every trial) show on a terminal or when verbose: into a log file each redraw is
a line. `UQA_PROGRESS=1/0` forces them on or off.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings

VERBOSE_ENV = "UQA_VERBOSE"


def verbose() -> bool:
    """Whether Ray's own console lines show (module docstring)."""
    return os.environ.get(VERBOSE_ENV, "0") not in ("", "0")


def ray_log_level() -> str:
    """The console level of Ray's own loggers: INFO when `verbose()`, else WARNING."""
    return "INFO" if verbose() else "WARNING"


def progress_bars() -> bool:
    """Whether progress bars show (module docstring)."""
    return bool(int(os.environ.get("UQA_PROGRESS", int(sys.stderr.isatty() or verbose()))))


def configure_data_context() -> None:
    """Ray Data settings used by every stage.

    The pull-based sort shuffle rather than the default hash shuffle for our group-by: faster here and it
    scales out as well (docs/decisions.md).
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.shuffle_strategy = ray.data.context.ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    ctx.enable_progress_bars = progress_bars()
    logging.getLogger("ray.data").setLevel(ray_log_level())
    ctx.print_on_execution_start = False


def init_ray(num_cpus: int | None = None, address: str | None = None) -> None:
    """Join the cluster named by RAY_ADDRESS (as under `ray job submit`) or start a local one."""
    import ray

    # Set before Ray starts, so that its workers inherit it (huggingface_hub reads it when first imported);
    # where this process has imported transformers already, its switch is set too.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "0" if progress_bars() else "1")
    if hf_logging := sys.modules.get("transformers.utils.logging"):
        if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0":
            hf_logging.enable_progress_bar()
        else:
            hf_logging.disable_progress_bar()
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            _init_local(num_cpus)
    configure_data_context()


def _init_local(num_cpus: int | None) -> None:
    """A fresh local instance (address="local"), never a head that happens to run on this machine
    (ray.init() with no address would join it, and refuse num_cpus).

    Ray Train V2 starts a PlacementGroupCleaner actor that polls the State API about the controller. The
    State API needs the dashboard, and an actor finds the cluster through RAY_ADDRESS or else
    /tmp/ray/ray_current_cluster, which a local instance does not update (it names the last `ray start`
    head, often dead). Without both, the actor's thread dies with a "Timed out while waiting for GCS"
    traceback in the middle of every training run. So: the dashboard on, and the GCS port chosen here
    so that every worker of this job gets RAY_ADDRESS = this instance.
    """
    import socket

    import ray
    from ray._private.services import get_node_ip_address

    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)  # read by Ray's node start-up
    try:
        # (No job-wide ray.LoggingConfig: it also drops the "(worker pid=...)" prefix of every forwarded line.)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, log_to_driver=True,
                 runtime_env={"env_vars": {"RAY_ADDRESS": f"{get_node_ip_address()}:{port}",
                                           VERBOSE_ENV: os.environ.get(VERBOSE_ENV, "0")}})
    finally:
        os.environ.pop("RAY_GCS_SERVER_PORT", None)  # a later subprocess's own Ray must not reuse it


class _WorkerConsole(logging.Filter):
    """What a Ray Train worker's console keeps: warnings and errors, and INFO records that are neither Ray
    Train's own (a line per report and per checkpoint, from every worker) nor, when `teed`, a print."""

    def __init__(self, teed: bool) -> None:
        super().__init__()
        self.teed = teed

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        if f"{os.sep}ray{os.sep}train{os.sep}" in record.pathname:
            return verbose()
        return not (self.teed and record.name == "root")


def quiet_train_worker() -> None:
    """Called first in a Ray Train worker. Ray Train patches `print` to log each line to the root logger,
    whose console handler writes it, and also to print it when stdout is redirected (as in every Ray
    worker): each line reached the driver twice. The console keeps the printed copy; Ray Train's log files
    keep everything."""
    # DeepSpeed's ZeRO calls a torch collective that torch deprecates: a two-line warning per worker and run.
    warnings.filterwarnings("ignore", message=".*all_gather_into_tensor.*", category=FutureWarning)
    logging.getLogger("ray.data").setLevel(ray_log_level())  # each dataset's "execution finished" line
    teed = sys.stdout is not sys.__stdout__  # the condition of Ray Train's tee (logging/patch_print.py)
    for logger in (logging.getLogger(), logging.getLogger("ray.train")):
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.addFilter(_WorkerConsole(teed))

