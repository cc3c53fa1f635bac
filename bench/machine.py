"""What machine a benchmark ran on, read from the machine itself (no hard-coded values).

Benchmark ratios differ between CPUs of one cloud "kind" (AVX-512 or not, AMX or not, how many cores,
how loaded), so every results file names them: CPU model and flags from /proc/cpuinfo, cores (all and
usable by this process), memory from /proc/meminfo, load average, library versions (ours from this
interpreter, torch/diffusers from the reference interpreter through a subprocess), date in UTC.
"""
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")
OUR_PACKAGES = ("mindspore", "numpy")
REFERENCE_PACKAGES = ("torch", "diffusers", "numpy")


def cpu_info(path="/proc/cpuinfo"):
    """CPU model name, family/model numbers and which of FLAGS the first core lists (None where
    /proc/cpuinfo is absent). The numbers matter where the name does not say: "AMD EPYC" family 25 model 17
    is Zen 4, whose AVX-512 runs on 256-bit units (no more FMA throughput than AVX2, unlike Intel's)."""
    model, flags, ids = None, None, {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return dict(cpu_model=platform.processor() or platform.machine(), cpu_family_model=None,
                    flags={name: None for name in FLAGS})
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("cpu family", "model") and key not in ids:
            ids[key] = value.strip()
        elif key in ("flags", "Features") and flags is None:
            flags = set(value.split())
    flags = flags or set()
    family_model = f"family {ids['cpu family']} model {ids['model']}" if len(ids) == 2 else None
    return dict(cpu_model=model or platform.processor() or platform.machine(), cpu_family_model=family_model,
                flags={name: name in flags for name in FLAGS})


def memory_mb(path="/proc/meminfo"):
    """MemTotal and MemAvailable in MB (None where unreadable)."""
    out = {"mem_total_mb": None, "mem_available_mb": None}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                name = {"MemTotal": "mem_total_mb", "MemAvailable": "mem_available_mb"}.get(key)
                if name:
                    out[name] = round(int(value.split()[0]) / 1024)
    except OSError:
        pass
    return out


def load_average():
    """1, 5 and 15 minute load averages (the other agents' work shows up here)."""
    return [round(x, 2) for x in os.getloadavg()]


def _version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def local_versions(names=OUR_PACKAGES):
    """Installed versions in this interpreter, from package metadata (no import of MindSpore needed)."""
    return {name: _version(name) for name in names}


_PROBE = ("import importlib.metadata as m, json, platform\n"
          "def v(n):\n"
          "    try:\n        return m.version(n)\n"
          "    except m.PackageNotFoundError:\n        return None\n"
          "out = {n: v(n) for n in %r}\n"
          "out['python'] = platform.python_version()\n"
          "try:\n    import torch\n    out['torch_threads'] = torch.get_num_threads()\n"
          "except Exception:\n    pass\n"
          "print(json.dumps(out))\n")


def reference_versions(python, names=REFERENCE_PACKAGES, timeout=120):
    """Versions in the reference (torch) interpreter, asked by a subprocess; {} when none is given."""
    if not python:
        return {}
    try:
        proc = subprocess.run([python, "-c", _PROBE % (tuple(names),)], capture_output=True, text=True,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine_record(torch_python=""):
    """Everything above as one JSON-able dict."""
    rec = dict(date_utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
               arch=platform.machine(), python=platform.python_version())
    rec.update(cpu_info())
    rec["cpu_count"] = os.cpu_count()
    rec["cpus_usable"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rec.update(memory_mb())
    rec["load_average"] = load_average()
    rec["versions"] = local_versions()
    rec["reference_python"] = torch_python or None
    rec["reference_versions"] = reference_versions(torch_python)
    return rec


def machine_line(rec):
    """One line for a README / results header: CPU, flags, cores, memory, load, versions, date."""
    have = [k for k, v in rec["flags"].items() if v]
    lacks = [k for k, v in rec["flags"].items() if v is False]
    flags = ", ".join(have) + (f"; no {', '.join(lacks)}" if lacks else "")
    ident = f", {rec['cpu_family_model']}" if rec.get("cpu_family_model") else ""
    parts = [f"{rec['cpu_model']}{ident} ({flags})", f"{rec['cpus_usable']} of {rec['cpu_count']} cores usable"]
    if rec.get("mem_total_mb"):
        parts.append(f"{rec['mem_total_mb'] / 1024:.0f} GiB RAM ({rec['mem_available_mb'] / 1024:.0f} available)")
    parts.append(f"load average {'/'.join(str(x) for x in rec['load_average'])}")
    ver = rec["versions"]
    soft = f"MindSpore {ver.get('mindspore')}, numpy {ver.get('numpy')}"
    ref = rec.get("reference_versions") or {}
    if ref and "error" not in ref:
        soft += f"; reference torch {ref.get('torch')}, diffusers {ref.get('diffusers')}"
    return ", ".join(parts) + f"; {soft}; {rec['date_utc']}"


if __name__ == "__main__":
    import sys
    record = machine_record(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TORCH_PYTHON", ""))
    print(json.dumps(record, indent=1))
    print(machine_line(record))
