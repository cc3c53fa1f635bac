"""The Ascend checks on a parsed graph (:func:`ldm.audit.ir.parse_ir`), with their allow-list.

* ``platform``: a kernel primitive whose documented platforms lack Ascend, or whose platforms cannot be
  found (``unknown``: no such class; ``undocumented``: no "Supported Platforms" anywhere, see
  :mod:`ldm.audit.platforms`). Graph-structure nodes (:data:`STRUCTURE`) run no kernel and are skipped.
* ``float64``: a float64 tensor in a device graph (an input, a Parameter or any node's input/output).
  Ascend's matrix and vector units have no float64; MindSpore falls back to AICPU or refuses.
* ``fp32_compute``: in a graph marked ``compute: fp16`` (amp O2, or a YAML's use_fp16), a cube-unit
  primitive (:data:`CUBE_PRIMITIVES`) with a float32 input: that matmul/conv runs at a fraction of the
  fp16 rate on Ascend, which usually means a forgotten cast.
Findings matched by :data:`ALLOWED` (a rule with a reason) are reported as ``allowed``, never dropped.
int64 tensors are listed per graph (``int64``) but not failed: ldm.audit could not confirm a missing
Ascend int64 kernel for any of the primitives found without an Ascend machine.
"""
import collections
import dataclasses
import os
import re

from ldm.audit.platforms import support

# nodes that hold graph structure (no device kernel): parameter reads, tuples, control flow, ordering
STRUCTURE = {
    "Parameter": "a graph input or weight",
    "Load": "reads a Parameter's current value",
    "MakeTuple": "groups values (no data movement)", "TupleGetItem": "picks from a tuple",
    "MakeList": "groups values", "ListGetItem": "picks from a list",
    "UpdateState": "orders side effects (monad)", "Depend": "orders side effects",
    "Partial": "binds a sub-graph for control flow", "Switch": "selects a sub-graph (control flow)",
    "StopGradient": "marks a value as constant for autodiff",
}
# the matrix-unit ("cube") primitives whose dtype decides the Ascend speed class
CUBE_PRIMITIVES = {"MatMul", "MatMulExt", "BatchMatMul", "BatchMatMulExt", "BMMExt", "Dense", "Conv2D",
                   "Conv2DBackpropInput", "Conv2DBackpropFilter", "Conv2DTranspose", "Convolution",
                   "ConvolutionGrad", "Conv3D", "FlashAttentionScore"}


@dataclasses.dataclass(frozen=True)
class AllowRule:
    """A deliberate exception: ``check`` findings on ``primitives`` whose source trace has a line of
    ``file`` matching ``code`` (a regex), in graphs whose meta has ``requires`` true."""
    name: str
    check: str
    primitives: frozenset
    file: str
    code: str
    requires: str
    reason: str

    def matches(self, finding_check, node, meta):
        if finding_check != self.check or node.primitive not in self.primitives:
            return False
        if self.requires and not meta.get(self.requires):
            return False
        pattern = re.compile(self.code)
        return any(t.file.endswith(self.file) and pattern.search(t.code) for t in node.trace)


_UPCAST_WHY = ("SD 2.x upcast_attention computes q.k^T in fp32 under fp16 (DESIGN.md section 5: fp16 scores "
               "overflow and the 768-v model gives black/NaN images)")
ALLOWED = (
    AllowRule("upcast_qk", "fp32_compute", frozenset({"BatchMatMul", "BatchMatMulExt"}), "ldm/models/attention_ops.py",
              r"bmm_nt\((?:qh|q_c) \* self\.scale", "upcast_attention",
              _UPCAST_WHY + "; also the gradients autodiff derives from that fp32 product"),
    AllowRule("upcast_qk_grad", "fp32_compute", frozenset({"BatchMatMul", "BatchMatMulExt"}),
              "ldm/models/attention_ops.py", r"bmm(?:_tn)?\(ds, (?:k|q_c)\.astype\(qk_dtype\)\)", "upcast_attention",
              "the chunked attention's hand-written backward of the upcast q.k^T (dQ = dS K, dK = dS^T Q): "
              "the gradient of an fp32 product, in fp32 as autodiff gives it on the standard path"),
)


@dataclasses.dataclass
class Finding:
    check: str            # platform | float64 | fp32_compute
    primitive: str
    detail: str
    where: str            # innermost repository source line (path:line), else innermost line
    code: str
    scope: str
    allowed_by: str = ""  # AllowRule name
    reason: str = ""


def _repo_line(node, repo):
    """(path:line, code) of the innermost trace line in the repository (installed packages excluded), else
    of the innermost line at all (MindSpore's own code, shown from ``mindspore/``)."""
    ours = [t for t in node.trace if repo and t.file.startswith(repo) and "site-packages" not in t.file]
    line = ours[-1] if ours else (node.trace[-1] if node.trace else None)
    if line is None:
        return "", ""
    path = line.file
    if ours:
        path = os.path.relpath(path, repo)
    elif "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    return f"{path}:{line.line}", line.code


def check_node(node, meta, repo=None):
    """Findings of one node ([Finding]; allowed ones carry the rule)."""
    if node.primitive in STRUCTURE:
        kinds = []
    else:
        info = support(node.primitive)
        kinds = []
        if info.status != "documented":
            kinds.append(("platform", f"{info.status} primitive: no Supported Platforms found"
                          + (f" ({info.source})" if info.source else "")))
        elif not info.ascend:
            kinds.append(("platform", f"documented for {', '.join(info.platforms)} only ({info.source})"))
    if "Float64" in node.dtypes():
        kinds.append(("float64", f"float64 tensor: inputs {node.inputs} -> outputs {node.outputs}"))
    if meta.get("compute") == "fp16" and node.primitive in CUBE_PRIMITIVES and "Float32" in node.inputs:
        kinds.append(("fp32_compute", f"runs in fp32 under fp16 compute: inputs {node.inputs}"))
    findings = []
    for check, detail in kinds:
        where, code = _repo_line(node, repo)
        finding = Finding(check, node.primitive, detail, where, code, node.scope)
        for rule in ALLOWED:
            if rule.matches(check, node, meta):
                finding.allowed_by, finding.reason = rule.name, rule.reason
                break
        findings.append(finding)
    return findings


def signature(node):
    return f"({', '.join(node.inputs)}) -> ({', '.join(node.outputs)})"


def audit_nodes(nodes, meta, repo=None):
    """Per-graph summary: primitives (count, platforms, dtype signatures), violations, allowed, int64."""
    primitives = {}
    for node in nodes:
        entry = primitives.get(node.primitive)
        if entry is None:
            info = support(node.primitive)
            entry = primitives[node.primitive] = dict(
                count=0, kind="structure" if node.primitive in STRUCTURE else "kernel",
                status=info.status, platforms=list(info.platforms), source=info.source,
                signatures=collections.Counter())
        entry["count"] += 1
        entry["signatures"][signature(node)] += 1
    for entry in primitives.values():
        entry["signatures"] = dict(entry["signatures"].most_common())
    violations, allowed = collections.Counter(), collections.Counter()
    int64 = collections.Counter()
    for node in nodes:
        for f in check_node(node, meta, repo):
            key = (f.check, f.primitive, f.detail, f.where, f.code, f.allowed_by, f.reason)
            (allowed if f.allowed_by else violations)[key] += 1
        if node.primitive not in STRUCTURE and "Int64" in node.dtypes():
            int64[(node.primitive, _repo_line(node, repo)[0])] += 1

    def rows(counter):
        return [dict(check=c, primitive=p, detail=d, where=w, code=code, count=n,
                     **({"allowed_by": a, "reason": r} if a else {}))
                for (c, p, d, w, code, a, r), n in sorted(counter.items())]
    return dict(meta=dict(meta), nodes=len(nodes), primitives=primitives, violations=rows(violations),
                allowed=rows(allowed),
                int64=[dict(primitive=p, where=w, count=n) for (p, w), n in sorted(int64.items())])
