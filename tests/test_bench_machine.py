"""bench/machine.py reads the machine it runs on; bench/readme_table.py builds the table from one run only."""
import datetime
import hashlib
import importlib.metadata
import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))
import machine  # noqa: E402
import readme_table  # noqa: E402


def test_record_comes_from_this_machine():
    rec = machine.machine_record(sys.executable)     # this interpreter stands in for the torch one
    assert rec["cpu_count"] == os.cpu_count()
    assert rec["cpus_usable"] == len(os.sched_getaffinity(0))
    with open("/proc/meminfo", encoding="utf-8") as f:
        total_kb = int(next(ln for ln in f if ln.startswith("MemTotal:")).split()[1])
    assert rec["mem_total_mb"] == round(total_kb / 1024)
    assert 0 < rec["mem_available_mb"] <= rec["mem_total_mb"]
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        text = f.read()
    names = [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")]
    if names:
        assert rec["cpu_model"] == names[0]
    flags = set(next(ln for ln in text.splitlines() if ln.startswith("flags")).split(":", 1)[1].split())
    assert rec["flags"] == {name: name in flags for name in machine.FLAGS}
    assert len(rec["load_average"]) == 3 and all(x >= 0 for x in rec["load_average"])
    assert rec["versions"]["mindspore"] == importlib.metadata.version("mindspore")
    assert rec["versions"]["numpy"] == importlib.metadata.version("numpy")
    ref = rec["reference_versions"]
    assert ref["numpy"] == importlib.metadata.version("numpy") and "torch" in ref and "diffusers" in ref
    stamp = datetime.datetime.strptime(rec["date_utc"], "%Y-%m-%d %H:%M:%S UTC").replace(
        tzinfo=datetime.timezone.utc)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - stamp).total_seconds()) < 120
    line = machine.machine_line(rec)
    assert rec["cpu_model"] in line and f"MindSpore {rec['versions']['mindspore']}" in line
    json.dumps(rec)                                  # JSON-able as is


def test_cpu_flags_parsed_from_a_cpuinfo_file(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Test CPU 9000\n"
                    "flags\t\t: fpu avx2 avx512f amx_tile\n\n"
                    "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    info = machine.cpu_info(str(path))
    assert info["cpu_model"] == "Test CPU 9000" and info["cpu_family_model"] == "family 6 model 143"
    assert info["flags"] == {"avx2": True, "avx512f": True, "avx512_bf16": False, "amx_tile": True}
    assert machine.reference_versions("") == {}
    assert "error" in machine.reference_versions(str(tmp_path / "no-python"))


def _run_record(tmp_path):
    models = dict(mindspore=dict(median_s=6.0, times_s=[6.1, 6.0, 5.9], mode="graph"),
                  pytorch=dict(median_s=5.0, times_s=[5.0] * 3))
    train = [dict(case="tiny", side="mindspore", ms_per_step=150.0, peak_rss_mb=2048.0),
             dict(case="tiny", side="torch", ms_per_step=50.0, peak_rss_mb=1024.0)]
    cache = dict(rows=[dict(case="train_tiny", reps=3, cold_first=13.6, warm_first=1.57, warm_steady=0.23,
                            warm_compile_share=0.85)])
    benches = []
    for name, data in (("bench_models", models), ("bench_compile_cache", cache), ("bench_train", train)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        benches.append(dict(name=name, load_before=[1.0, 1, 1], load_after=[2.5, 1, 1],
                            json=dict(path=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest())))
    return dict(machine=machine.machine_record(""), quick=False, benchmarks=benches)


def test_readme_table_from_one_run(tmp_path):
    run = _run_record(tmp_path)
    table = readme_table.build_table(run)
    assert machine.machine_line(run["machine"]) in table
    assert "| 6.00 s | 5.00 s | 1.20 |" in table and "median of 3" in table
    assert "150 ms (peak 2.0 GB) | 50 ms (peak 1.0 GB) | 3.00 |" in table
    assert table.count("[load 1.0->2.5]") == 3
    main, _, own = table.partition("| `--compile_cache`")
    assert "3.00 |" in main and "13.60 s" not in main         # the cache rows form a table of their own, last
    assert "first step (median of 3) [load 1.0->2.5] | 13.60 s | 1.57 s | 0.23 s | 85% |" in own
    (tmp_path / "bench_train.json").write_text("[]")      # a later lone rerun: not part of that run
    with pytest.raises(SystemExit, match="not the file run_all recorded"):
        readme_table.build_table(run)
