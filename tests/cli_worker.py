"""Child side of tests/cli_table.py: run each case's CLI script as __main__ and record what it did."""
import contextlib
import hashlib
import importlib
import io
import json
import logging
import os
import runpy
import sys
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fill(value, folder):
    return value.replace("{tmp}", folder).replace("{repo}", REPO)


def snapshot(paths):
    """{file path: sha256} of every file at or below ``paths`` (what must stay as it was)."""
    files = {}
    for top in paths:
        walk = [(top, [], [""])] if os.path.isfile(top) else os.walk(top)
        for root, _, names in walk:
            for name in names:
                path = os.path.join(root, name) if name else root
                with open(path, "rb") as f:
                    files[path] = hashlib.sha256(f.read()).hexdigest()
    return files


def run_case(case, folder):
    os.makedirs(folder, exist_ok=True)
    if case.get("setup"):
        setups = importlib.import_module("tests.cli_setups")
        getattr(setups, case["setup"])(folder)
    unchanged = [_fill(p, folder) for p in case.get("unchanged", [])]
    before = snapshot(unchanged)
    argv = [_fill(a, folder) for a in case["argv"]]
    script = os.path.join(REPO, case["script"])
    err, out = io.StringIO(), io.StringIO()
    old_argv, old_cwd = sys.argv, os.getcwd()
    root_handlers = list(logging.getLogger().handlers)
    code = None
    sys.argv = [script] + argv
    os.chdir(folder)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            # log records written to stderr during the case go to the captured stream too
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.__stderr__,):
                    handler.setStream(err)
            try:
                runpy.run_path(script, run_name="__main__")
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:                      # escaped run_cli: exactly what must not happen
                err.write(traceback.format_exc())
                code = "exception"
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is err:
                handler.setStream(sys.__stderr__)
        for handler in list(logging.getLogger().handlers):
            if handler not in root_handlers:
                logging.getLogger().removeHandler(handler)
    after = snapshot(unchanged)
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    return {"code": code, "stderr": err.getvalue(), "stdout": out.getvalue()[-2000:],
            "absent": [_fill(p, folder) for p in case.get("absent", [])], "changed": changed}


def main(spec_path, out_path):
    sys.path.insert(0, REPO)
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    results = []
    for i, case in enumerate(spec["cases"]):
        results.append(run_case(case, os.path.join(spec["root"], f"case{i:03d}")))
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
