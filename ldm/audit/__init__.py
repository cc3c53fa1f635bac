"""Ascend audit: compile every graph the toolkit builds (tiny configs) with MindSpore's IR dump, list
each graph's primitives with their dtypes, and check them for Ascend (scripts/ascend_audit.py,
docs/ascend_audit.md).

    from ldm.audit import run_audit
    report = run_audit(targets)          # targets: [ldm.audit.graphs.GraphTarget]
    report["violations"]                 # [] when every graph passes

Modules: ``ir`` (the IR text parser), ``platforms`` (a primitive's documented devices), ``checks`` (the
checks and their allow-list), ``graphs`` (the targets of ldm; eval's are in eval/audit_graphs.py).
"""
import gc
import os
import shutil
import tempfile
import time

from ldm.audit.checks import audit_nodes
from ldm.audit.graphs import REPO, DumpContext, prepare_environment
from ldm.audit.ir import parse_ir

MAX_SIGNATURES = 4      # dtype signatures per primitive in the Markdown tables (the JSON has all)

__all__ = ["run_audit", "to_markdown", "prepare_environment"]


def run_audit(targets, ir_dir=None, progress=True):
    """Build and compile each target's graphs with the IR dump on, then check them. ``ir_dir``: keep the
    dumps there (default: a temporary folder, removed). Returns the report dict (see to_json keys:
    graphs, violations, allowed, ops, details, seconds)."""
    import mindspore as ms
    from tqdm import tqdm
    ms.set_context(mode=ms.PYNATIVE_MODE)      # as the CLIs: graphs are compiled one by one with ms.jit
    root = ir_dir or tempfile.mkdtemp(prefix="msd-vpred-audit-")
    os.makedirs(root, exist_ok=True)
    details, timings = {}, {}
    try:
        bar = tqdm(targets, desc="audit", unit="target", disable=not progress)
        for target in bar:
            bar.set_postfix_str(target.name)
            start = time.perf_counter()
            ctx = DumpContext(root, target.name)
            target.build(ctx)
            for graph in ctx.graphs:
                with open(graph.path, encoding="utf-8", errors="replace") as f:
                    nodes = parse_ir(f.read())
                details[graph.name] = audit_nodes(nodes, graph.meta, REPO + os.sep)
            timings[target.name] = round(time.perf_counter() - start, 1)
            del ctx
            gc.collect()                     # the target's model and runs (its compiled graphs stay cached)
    finally:
        if ir_dir is None:
            shutil.rmtree(root, ignore_errors=True)
        else:
            shutil.rmtree(os.path.join(root, "_work"), ignore_errors=True)
    return summarize(details, timings)


def summarize(details, timings=None):
    """The report of per-graph results: totals, every violation and allowed finding tagged with its
    graph, and ``ops``: primitive -> platforms, status and the graphs using it."""
    violations, allowed, ops = [], [], {}
    for name, graph in details.items():
        violations += [dict(graph=name, **v) for v in graph["violations"]]
        allowed += [dict(graph=name, **a) for a in graph["allowed"]]
        for prim, entry in graph["primitives"].items():
            op = ops.setdefault(prim, dict(kind=entry["kind"], status=entry["status"], platforms=entry["platforms"],
                                           source=entry["source"], count=0, graphs=[]))
            op["count"] += entry["count"]
            op["graphs"].append(name)
    return dict(graphs=len(details), primitives=len([o for o in ops.values() if o["kind"] == "kernel"]),
                violations=violations, allowed=allowed, ops=dict(sorted(ops.items())), details=details,
                seconds=timings or {})


def _cell(text):
    return str(text).replace("|", "\\|")


def to_markdown(report):
    """Tables for docs/ascend_audit.md: graphs, violations, allowed findings, primitives per graph."""
    out = [f"{report['graphs']} graphs, {report['primitives']} distinct kernel primitives, "
           f"{len(report['violations'])} violations, {len(report['allowed'])} allowed findings.", ""]
    out += ["### Violations", ""]
    if report["violations"]:
        out += ["| graph | check | primitive | where | count | detail |", "|---|---|---|---|---|---|"]
        out += [f"| {v['graph']} | {v['check']} | {v['primitive']} | {_cell(v['where'])} | {v['count']} | "
                f"{_cell(v['detail'])} |" for v in report["violations"]]
    else:
        out += ["None."]
    out += ["", "### Allowed (deliberate, with reasons)", ""]
    if report["allowed"]:
        out += ["| graph | primitive | where | count | rule |", "|---|---|---|---|---|"]
        out += [f"| {a['graph']} | {a['primitive']} | {_cell(a['where'])} | {a['count']} | {a['allowed_by']} |"
                for a in report["allowed"]]
        reasons = {a["allowed_by"]: a["reason"] for a in report["allowed"]}
        out += [""] + [f"- `{k}`: {_cell(v)}" for k, v in sorted(reasons.items())]
    else:
        out += ["None."]
    out += ["", "### Primitives", "",
            "| primitive | platforms (documented) | read from | graphs |", "|---|---|---|---|"]
    for prim, op in report["ops"].items():
        if op["kind"] != "kernel":
            continue
        plat = " ".join(op["platforms"]) if op["status"] == "documented" else op["status"]
        out.append(f"| {prim} | {plat} | {_cell(op['source'])} | {len(op['graphs'])} |")
    out += ["", "### Primitives per graph (count, dtype signatures)", ""]
    for name, graph in report["details"].items():
        meta = ", ".join(f"{k} {v}" for k, v in graph["meta"].items())
        out += [f"#### {name}", "", f"{graph['nodes']} nodes; {meta}", "",
                "| primitive | count | signatures (inputs) -> (outputs) |", "|---|---|---|"]
        for prim, entry in sorted(graph["primitives"].items()):
            if entry["kind"] != "kernel":
                continue
            shown = list(entry["signatures"].items())[:MAX_SIGNATURES]
            sigs = "; ".join(f"{s} x{n}" for s, n in shown)
            if len(entry["signatures"]) > MAX_SIGNATURES:
                sigs += f"; ... ({len(entry['signatures']) - MAX_SIGNATURES} more in the JSON)"
            out.append(f"| {prim} | {entry['count']} | {_cell(sigs)} |")
        out.append("")
    return "\n".join(out) + "\n"
