"""The default thread count: the cores this process may use (affinity, cgroup quota), less those other
work keeps busy, and the user's --threads / OMP_NUM_THREADS always taken."""

import pytest
import torch

from zooforge.zoo import cores


def test_the_cgroup_quota_caps_the_cores(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cores.cgroup_cpu_limit(tmp_path) == 2                       # 1.5 CPUs: two threads may run
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cores.cgroup_cpu_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("400000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cores.cgroup_cpu_limit(v1) == 4
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1")                 # v1's "no quota"
    assert cores.cgroup_cpu_limit(v1) is None
    assert cores.cgroup_cpu_limit(tmp_path / "absent") is None


def test_busy_cores_take_the_larger_of_the_load_average_and_the_tasks_running_now(tmp_path):
    f = tmp_path / "loadavg"
    f.write_text("0.10 0.20 0.30 3/200 123\n")                         # a job that just started: 2 others run
    assert cores.busy_elsewhere(f) == 2.0
    f.write_text("1.70 1.20 0.90 1/200 123\n")                         # only this reader runs this instant
    assert cores.busy_elsewhere(f) == 1.7
    f.write_text("garbage")
    assert cores.busy_elsewhere(f) >= 0.0                               # falls back to os.getloadavg


@pytest.mark.parametrize("busy, cpus, expected", [(0.0, 8, 8), (3.2, 8, 5), (8.0, 8, 1), (20.0, 8, 1),
                                                  (32.0, 64, 4)])       # half of 64 busy: half of our 8
def test_default_threads_leave_the_busy_cores_alone(monkeypatch, busy, cpus, expected):
    monkeypatch.setattr(cores, "available_cores", lambda: 8)
    monkeypatch.setattr(cores, "busy_elsewhere", lambda: busy)
    monkeypatch.setattr(cores.os, "cpu_count", lambda: cpus)
    assert cores.default_threads() == expected


def test_the_user_word_wins_over_the_default(monkeypatch):
    from zooforge.cli.common import set_threads

    before = torch.get_num_threads()
    monkeypatch.setattr(cores, "default_threads", lambda: 1)
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        set_threads()
        assert torch.get_num_threads() == 2
        set_threads(1)
        assert torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        torch.set_num_threads(2)
        set_threads()
        assert torch.get_num_threads() == 1                             # the free cores, not every core
    finally:
        torch.set_num_threads(before)
