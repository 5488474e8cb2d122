"""How many CPU threads a zooforge process should use: the cores it may run on, less those that
other work keeps busy right now.

CPU torch (and the BLAS under NumPy) spin-wait: a job with one thread per core beside another busy
job on the same cores makes every thread of both wait for the others, and the measured cost on this
project's 2-core machine was 4-90x (``python benchmarks/threads.py --load 1 --load-kind torch``),
where one thread fewer costs at most the share of one core. So without ``--threads`` or
``OMP_NUM_THREADS`` (the user's word, always taken) the default is :func:`default_threads`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cores", "busy_elsewhere", "cgroup_cpu_limit", "default_threads"]


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup") -> int | None:
    """The CPU quota of this process's cgroup in whole cores (rounded up), or None where none is set:
    a container limited to 2 CPUs on a 64-core host sees 64 cores in its affinity and may use 2."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]                     # cgroup v2
    except (OSError, ValueError):
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()             # cgroup v1
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        q, p = float(quota), float(period)
    except ValueError:                                  # "max": no quota
        return None
    return max(1, math.ceil(q / p)) if q > 0 and p > 0 else None


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity where the OS reports one, capped by its
    cgroup's CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cores, limit)) if limit else cores


def busy_elsewhere(loadavg: str | Path = "/proc/loadavg") -> float:
    """Cores of this machine busy with other work: the larger of the 1-minute load average and the
    tasks runnable at this moment less this one (the load average lags a job that just started by a
    minute; the moment's count is noisy), 0 where the OS reports neither."""
    try:
        fields = Path(loadavg).read_text().split()
        return max(float(fields[0]), float(fields[3].split("/")[0]) - 1.0)
    except (OSError, IndexError, ValueError):
        try:
            return float(os.getloadavg()[0])
        except (OSError, AttributeError):
            return 0.0


def default_threads() -> int:
    """One thread per core this process may use that other work does not keep busy, at least one.
    The busy cores are counted machine-wide, so they are scaled to this process's share of the
    machine (all of it on a laptop; 2 of 64 cores in a container)."""
    cores = available_cores()
    share = cores / max(cores, os.cpu_count() or cores)
    return max(1, min(cores, round(cores - busy_elsewhere() * share)))
