"""Ascend audit (ldm.audit, scripts/ascend_audit.py): the IR parser and every check on small synthetic
IR text (no compilation), then one real CLI run on two targets (a compiled training step and the CLIP
towers: ~30 s on 2 cores)."""
import json
import os
import subprocess
import sys

import pytest

from ldm.audit import summarize, to_markdown
from ldm.audit.checks import audit_nodes, check_node
from ldm.audit.ir import parse_ir, primitive_name, tensor_dtypes
from ldm.audit.platforms import support

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATTN = os.path.join(REPO, "ldm", "models", "attention_ops.py")


def node(callee, inputs, outputs, trace=(), scope="Default/op"):
    """One IR node in MindSpore 2.8's dump layout: ``trace`` = [(file, line, code)], outermost first."""
    sig = ", ".join(f"<Tensor[{d}], (2, 4)>" for d in inputs)
    out = ", ".join(f"<Tensor[{d}], (2, 4)>" for d in outputs)
    lines = [f"  %1(x) = {callee}(%0, Bool(0)) {{instance name: op}} cnode_attrs: {{checkpoint: Bool(1)}}",
             f"      : ({sig}, <Bool, NoShape>) -> ({out})",
             f"      # Fullname with scope: ({scope})"]
    lines += [f"      # In file {f}:{n}, 8~40/        {code}/" for f, n, code in trace]
    return "\n".join(lines)


def graph(*nodes, params=("<Tensor[Float32], (2, 4)>",)):
    head = ["# IR entry: @1_construct_7", "# Params:"]
    head += [f"%para{i + 1}_x{i}: {p} : [2, 4]" for i, p in enumerate(params)]
    return "\n".join(head + ["", "subgraph @1_construct_7() {"] + list(nodes) + ["  Return(%1)", "}"]) + "\n"


UPCAST = (ATTN, 241, "scores = self.bmm_nt(qh * self.scale, kh)")


# ---------------------------------------------------------------- parser
def test_parser_reads_primitives_dtypes_scope_and_trace():
    text = graph(node("PrimFunc_MatMul", ["Float16", "Float16"], ["Float16"], [UPCAST], scope="Default/a/MatMul-op0"),
                 "  %2(y) = @2_sub_graph(%1)\n      : (<Tensor[Float16], (2, 4)>) -> (<Tensor[Float16], (2, 4)>)",
                 "  %3(z) = Load(%para1_x0, UMonad[U])\n      : (<Ref[Tensor[Float32]], (2, 4)>, <UMonad, NoShape>)"
                 " -> (<Tensor[Float32], (2, 4)>)\n      # In file /x.py:3, 1~2/    a = b/<~~This line of code can be "
                 "shared by multiple nodes, and may be duplicated./",
                 params=("<Tensor[Float64], (2,)>",))
    nodes = parse_ir(text)
    assert [n.primitive for n in nodes] == ["Parameter", "MatMul", "Load"]      # the sub-graph call is no primitive
    assert nodes[0].outputs == ["Float64"] and nodes[0].scope == "x0"
    mm = nodes[1]
    assert mm.inputs == ["Float16", "Float16"] and mm.outputs == ["Float16"]   # the Bool scalar is not a tensor
    assert mm.scope == "Default/a/MatMul-op0"
    assert (mm.trace[0].file, mm.trace[0].line, mm.trace[0].code) == UPCAST
    assert nodes[2].inputs == ["Float32"] and nodes[2].trace[0].code == "a = b"


def test_names_and_tuple_types():
    assert primitive_name("PrimFunc_BatchMatMul") == "BatchMatMul"
    assert primitive_name("S_Prim_Mul") == "Mul"
    assert primitive_name("@graph") is None and primitive_name("%4") is None
    assert tensor_dtypes("<Tuple[Tensor[Float16]*2], TupleShape((2), (2))>, <Int64, NoShape>") == ["Float16"]


# ---------------------------------------------------------------- platforms
def test_platforms_come_from_the_docs():
    assert support("MatMul").ascend
    assert support("FlashAttentionScore").platforms == ("Ascend",)
    assert support("Square").source == "mindspore.ops.square"                  # "Refer to" followed
    assert "forward of Conv2DBackpropFilter" in support("Conv2DBackpropFilter").source
    assert support("Bernoulli").status == "documented" and not support("Bernoulli").ascend
    assert support("NoSuchPrimitiveXyz").status == "unknown"


# ---------------------------------------------------------------- checks
def findings(text, **meta):
    return [f for n in parse_ir(text) for f in check_node(n, meta, REPO + os.sep)]


def test_non_ascend_and_unknown_primitives_fail():
    found = findings(graph(node("PrimFunc_Bernoulli", ["Float32"], ["Float32"]),
                           node("PrimFunc_NoSuchPrimitiveXyz", ["Float32"], ["Float32"]),
                           node("PrimFunc_Add", ["Float32", "Float32"], ["Float32"])), compute="fp32")
    assert [(f.check, f.primitive, f.allowed_by) for f in found] == [("platform", "Bernoulli", ""),
                                                                      ("platform", "NoSuchPrimitiveXyz", "")]
    assert "GPU, CPU only" in found[0].detail and "unknown" in found[1].detail


def test_float64_anywhere_fails():
    found = findings(graph(node("PrimFunc_Add", ["Float64", "Float32"], ["Float64"]),
                           params=("<Tensor[Float64], (3,)>",)), compute="fp32")
    assert [(f.check, f.primitive) for f in found] == [("float64", "Parameter"), ("float64", "Add")]


def test_fp32_matmul_under_fp16_fails_and_not_under_fp32():
    text = graph(node("PrimFunc_MatMul", ["Float32", "Float32"], ["Float32"],
                      [(os.path.join(REPO, "ldm", "models", "layers.py"), 10, "x = self.matmul(x, w)")]),
                 node("PrimFunc_Conv2D", ["Float16", "Float16"], ["Float16"]))
    found = findings(text, compute="fp16", upcast_attention=True)
    assert [(f.check, f.primitive, f.where, f.allowed_by) for f in found] == [
        ("fp32_compute", "MatMul", "ldm/models/layers.py:10", "")]
    assert findings(text, compute="fp32") == []


def test_upcast_qk_bmm_is_allowed_with_its_reason_only_with_upcast():
    text = graph(node("PrimFunc_BatchMatMul", ["Float32", "Float32"], ["Float32"], [UPCAST]),
                 node("PrimFunc_BatchMatMul", ["Float32", "Float16"], ["Float32"],
                      [(ATTN, 242, "out = self.bmm(ops.softmax(scores), vh)")]))
    found = findings(text, compute="fp16", upcast_attention=True)
    assert [(f.where, f.allowed_by) for f in found] == [("ldm/models/attention_ops.py:241", "upcast_qk"),
                                                        ("ldm/models/attention_ops.py:242", "")]
    assert "DESIGN.md section 5" in found[0].reason
    assert [f.allowed_by for f in findings(text, compute="fp16", upcast_attention=False)] == ["", ""]


def test_report_counts_and_markdown():
    text = graph(node("PrimFunc_BatchMatMul", ["Float32", "Float32"], ["Float32"], [UPCAST]),
                 node("PrimFunc_BatchMatMul", ["Float32", "Float32"], ["Float32"], [UPCAST]),
                 node("PrimFunc_Cast", ["Float32"], ["Int64"]))
    detail = audit_nodes(parse_ir(text), dict(compute="fp16", upcast_attention=True), REPO + os.sep)
    assert detail["primitives"]["BatchMatMul"]["count"] == 2
    assert detail["primitives"]["BatchMatMul"]["signatures"] == {"(Float32, Float32) -> (Float32)": 2}
    assert detail["violations"] == [] and detail["allowed"][0]["count"] == 2
    assert detail["int64"] == [dict(primitive="Cast", where="", count=1)]
    report = summarize({"t/step": detail})
    assert report["graphs"] == 1 and report["primitives"] == 2 and "Cast" in report["ops"]
    md = to_markdown(report)
    assert "| t/step | BatchMatMul | ldm/models/attention_ops.py:241 | 2 | upcast_qk |" in md
    assert "#### t/step" in md


# ---------------------------------------------------------------- the CLI, compiling for real
def test_cli_subset_compiles_and_reports(tmp_path):
    out, md = tmp_path / "audit.json", tmp_path / "audit.md"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "ascend_audit.py"), "--graphs", "train_fp32",
                           "clip", "--json_out", str(out), "--markdown_out", str(md), "--no_progress"],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert sorted(report["details"]) == ["clip/image_features", "clip/text_features", "train_fp32/encode",
                                         "train_fp32/step"]
    assert report["graphs"] == 4 and report["violations"] == []
    step = report["details"]["train_fp32/step"]["primitives"]
    assert {"Conv2D", "Conv2DBackpropFilter", "BatchMatMul", "AdamWeightDecay"} <= set(step)
    assert all(op["platforms"] for op in report["ops"].values() if op["kind"] == "kernel")
    assert "#### train_fp32/step" in md.read_text()
    assert sorted(os.listdir(tmp_path)) == ["audit.json", "audit.md"]          # no IR dump left in the cwd


def test_cli_unknown_graph_is_one_line():
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "ascend_audit.py"), "--graphs", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown graph target(s) nope" in proc.stderr


@pytest.mark.parametrize("flag", ["--json_out", "--markdown_out"])
def test_cli_output_path_that_is_a_folder_is_refused(tmp_path, flag):
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "ascend_audit.py"), flag, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "is a folder" in proc.stderr
