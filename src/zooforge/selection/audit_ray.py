"""The audit's Ray backend: each cell a Ray task on a local instance or an existing cluster; the
driver gathers rows as they finish and writes the parts, so workers need no shared filesystem."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zooforge.errors import ZooforgeError, describe
from zooforge.selection.audit_store import cell_rows

if TYPE_CHECKING:
    from zooforge.selection.audit import Cell, Plan

__all__ = ["RAY_CONNECT_TIMEOUT_S", "check_ray_address", "run_ray"]


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
        task = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
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
