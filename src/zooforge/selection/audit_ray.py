"""The audit's Ray backend: each cell a Ray task on a local instance or an existing cluster; the
driver gathers rows as they finish and writes the parts, so workers need no shared filesystem."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from zooforge.errors import ZooforgeError, describe
from zooforge.selection.audit_store import cell_rows

if TYPE_CHECKING:
    from zooforge.selection.audit import Cell, Plan

__all__ = ["RAY_CONNECT_TIMEOUT_S", "check_ray_address", "loopback_cluster", "run_ray", "task_resources"]


def _ray_task(cell: Cell, plan: Plan, threads: int) -> list[dict]:
    import torch

    from zooforge.selection.audit import run_cell

    torch.set_num_threads(threads)
    return run_cell(cell, plan)


RAY_CONNECT_TIMEOUT_S = 5.0


def check_ray_address(address: str) -> None:
    """Fail at once, with what to check, when a Ray address has nothing listening (Ray itself retries
    for minutes). 'auto' and 'local' are Ray's own words and are left to it."""
    import socket

    if address in ("auto", "local"):
        return
    host_port = address.removeprefix("ray://").rstrip("/")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ZooforgeError(f"--address {address!r}: expected host:port (the GCS, e.g. 10.0.0.5:6379) or "
                            f"ray://host:port (Ray Client, e.g. ray://head:10001).")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ZooforgeError(f"--address {address!r}: nothing answers at {host}:{port} ({exc}). Check that `ray start "
                            f"--head` runs there and the port is open, or use --backend local.") from None


def task_resources(device: str | None, cluster_gpus: float) -> dict[str, float]:
    """What one cell asks Ray for: one CPU, and a whole GPU when the plan's device is CUDA or is left to
    the best available on a cluster that has GPUs (two extractions never share a GPU's memory
    unasked). A plan that asks for CUDA on a cluster without a GPU is refused: its tasks would wait
    for ever."""
    wants_gpu = (device or "").startswith("cuda") or (device is None and cluster_gpus > 0)
    if wants_gpu and cluster_gpus <= 0:
        raise ZooforgeError(f"the plan's device is {device!r} but the Ray cluster has no GPU; set device = \"cpu\" "
                            f"in the plan, or start the Ray nodes with their GPUs (ray start --num-gpus N).")
    return {"num_cpus": 1, "num_gpus": 1 if wants_gpu else 0}


@contextmanager
def loopback_cluster(nodes: int = 2, cpus_per_node: int = 1, timeout: float = 120.0) -> Iterator[str]:
    """A Ray cluster of ``nodes`` nodes on 127.0.0.1 (``ray start --head`` and ``ray start --address``
    for the rest, each with ``cpus_per_node`` CPUs), yielding the head's address for ``--address``:
    the multi-node path on one machine. Token authentication is off for it (loopback only), and for
    this process while it runs; the nodes stop when the block ends."""
    import os
    import shutil
    import socket
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_bin is None:
        raise ZooforgeError("no `ray` command beside this Python: pip install 'zooforge[ray]'.")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="zfray", dir="/tmp" if os.path.isdir("/tmp") else None)  # socket paths stay short
    env = dict(os.environ, RAY_AUTH_MODE="disabled")
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    common = ["--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus_per_node}", "--disable-usage-stats"]
    started = [subprocess.Popen([ray_bin, "start", "--head", f"--port={port}", "--include-dashboard=false",
                                 f"--temp-dir={temp}", *common], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or started[0].poll() is not None:
                    raise ZooforgeError(f"the loopback Ray head did not start on {address}.") from None
                time.sleep(0.3)
        for _ in range(nodes - 1):
            started.append(subprocess.Popen([ray_bin, "start", f"--address={address}", *common], env=env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        import ray

        ray.init(address=address, log_to_driver=False)
        try:
            while sum(n["Alive"] for n in ray.nodes()) < nodes:       # every node joined before any work
                if time.monotonic() > deadline:
                    raise ZooforgeError(f"only {sum(n['Alive'] for n in ray.nodes())} of {nodes} loopback Ray "
                                        f"nodes joined {address}.")
                time.sleep(0.3)
        finally:
            ray.shutdown()
        yield address
    finally:
        for proc in reversed(started):
            proc.terminate()
        for proc in reversed(started):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(temp, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def run_ray(todo: list[Cell], plan: Plan, finish, bar, address: str | None, workers: int | None) -> None:
    try:
        import ray
    except ImportError:
        raise ZooforgeError("the ray backend needs Ray: pip install 'zooforge[ray]'.") from None
    started = not ray.is_initialized()
    if started and address:
        check_ray_address(address)
    if started:
        kwargs = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
        try:
            ray.init(log_to_driver=False, **kwargs)
        except Exception as exc:      # noqa: BLE001 - Ray raises ConnectionError, ValueError, RuntimeError, ...
            where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
            raise ZooforgeError(f"cannot start or reach {where}: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}. Check the address (ray://host:10001 "
                                f"or host:6379), that `ray start` runs there, or use --backend local.") from None
    try:
        resources = task_resources(plan.device, ray.cluster_resources().get("GPU", 0))
        task = ray.remote(max_retries=0, **resources)(_ray_task)
        pending = {task.remote(cell, plan, 1): cell for cell in todo}
        bar.show(f"{len(pending)} cell(s) on Ray")
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            try:
                rows = ray.get(ready[0])
            except Exception as exc:     # noqa: BLE001 - a crashed worker (OOM kill) fails its cell only
                rows = cell_rows(cell, plan, status="error", reason=describe(exc))
            finish(cell, rows)
            bar.step()
            bar.show(f"{cell.entry.id} on {cell.dataset} done")
    finally:
        if started:
            ray.shutdown()
