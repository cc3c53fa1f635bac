"""Ascend audit: compile every graph the toolkit builds (on the tiny configs) with MindSpore's IR dump,
list every primitive with its dtypes, and fail (exit 1) on what would not run, or not run well, on Ascend.

    python scripts/ascend_audit.py --json_out audit.json --markdown_out audit.md
    python scripts/ascend_audit.py --graphs train_fp16_o2 pipeline_fp16

Checks: a primitive whose documented platforms lack Ascend (or cannot be found); a float64 tensor in a
device graph; under fp16 compute (amp O2 / use_fp16), a MatMul/BatchMatMul/Conv2D in fp32, except the
allow-listed SD 2.x upcast attention. See docs/ascend_audit.md.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ldm.cli_args import OneLineParser, output_file, write_text_atomic  # noqa: E402
from ldm.errors import UserError, run_cli  # noqa: E402
from ldm.audit.graphs import prepare_environment  # noqa: E402


def all_targets():
    from eval.audit_graphs import TARGETS as EVAL_TARGETS
    from ldm.audit.graphs import TARGETS
    return TARGETS + EVAL_TARGETS


def target_help():
    return ", ".join(t.name for t in all_targets())


def build_parser():
    parser = OneLineParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                           epilog="Exit status: 0 no violation, 1 violations (each printed as one line: "
                                  "graph, check, primitive, source line), 2 bad usage.")
    parser.add_argument("--graphs", nargs="+", metavar="NAME",
                        help=f"audit only these targets (default: all): {target_help()}")
    parser.add_argument("--json_out", metavar="FILE",
                        help='write the report as JSON: {"graphs": N, "primitives": N, "violations": [...], '
                             '"allowed": [...], "ops": {primitive: platforms, graphs}, "details": {graph: '
                             'primitives with dtype signatures, findings, int64 uses}, "seconds": {target: s}}')
    parser.add_argument("--markdown_out", metavar="FILE",
                        help="write the tables of docs/ascend_audit.md (violations, allowed findings, primitives "
                             "per graph with their dtype signatures)")
    parser.add_argument("--ir_dir", metavar="DIR",
                        help="keep MindSpore's IR dumps here, one folder per graph (default: a temporary "
                             "folder, removed at the end)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    for flag in ("json_out", "markdown_out"):
        if getattr(args, flag):
            output_file(getattr(args, flag), f"--{flag}")
    targets = all_targets()
    if args.graphs:
        known = {t.name: t for t in targets}
        unknown = [n for n in args.graphs if n not in known]
        if unknown:
            raise UserError(f"unknown graph target(s) {', '.join(unknown)}; choose from {', '.join(known)}")
        targets = [known[n] for n in dict.fromkeys(args.graphs)]
    prepare_environment()                 # before MindSpore's import: dump only the pass the audit reads
    import mindspore as ms
    ms.set_device("CPU")
    from ldm.audit import run_audit, to_markdown
    report = run_audit(targets, ir_dir=args.ir_dir, progress=not args.no_progress)
    if args.json_out:
        write_text_atomic(args.json_out, json.dumps(report, indent=1) + "\n")
    if args.markdown_out:
        write_text_atomic(args.markdown_out, to_markdown(report))
    for v in report["violations"]:
        print(f"{v['graph']}: {v['check']}: {v['primitive']} at {v['where'] or '?'} (x{v['count']}): {v['detail']}",
              file=sys.stderr)
    print(f"{report['graphs']} graphs, {report['primitives']} kernel primitives, {len(report['violations'])} "
          f"violations, {len(report['allowed'])} allowed findings ({sum(report['seconds'].values()):.0f} s)")
    return 1 if report["violations"] else 0


if __name__ == "__main__":
    run_cli(main)
