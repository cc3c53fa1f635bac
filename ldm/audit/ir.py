"""Read MindSpore's IR text dumps (``save_graphs``): every node with its primitive, dtypes and source.

A node of a dumped graph looks like (MindSpore 2.8)::

    %3(x) = PrimFunc_MatMul(%0, %2, Bool(0), Bool(1)) {instance name: matmul} cnode_attrs: {...}
        : (<Tensor[Float16], (2, 4)>, <Tensor[Float16], (3, 4)>, <Bool, NoShape>, <Bool, NoShape>) -> (<Tensor[Float16], (2, 3)>)
        # Fullname with scope: (Default/d-Dense/MatMul-op0)
        # In file /repo/ldm/models/attention_ops.py:139, 15~40/        scores = self.bmm_nt(qh * self.scale, kh)/

:func:`parse_ir` turns such text into :class:`IRNode` records: the primitive name without the
``PrimFunc_`` / ``S_Prim_`` prefix, the dtype of every tensor input and output (scalars and tuples of
scalars are compile-time values, not device tensors, and are left out), the scope and the ``In file``
trace (outermost call first). Calls of sub-graphs (``@name(...)``, ``%N(...)``) are not primitives and
are skipped; the sub-graphs themselves are parsed like the entry graph.
"""
import dataclasses
import re

_NODE = re.compile(r"^\s+%\d+\([^)]*\)\s*=\s*([A-Za-z_@%][\w.@$-]*)\(")
_RETURN = re.compile(r"^\s+Return\(")
_SIGNATURE = re.compile(r"^\s+: \((.*)\) -> \((.*)\)\s*$")
_SCOPE = re.compile(r"^\s+# Fullname with scope: \((.*)\)\s*$")
_TRACE = re.compile(r"^\s+# In file (.+?):(\d+)(?:~\d+)?, [^/]*/(.*?)/(?:<~~.*)?$")
_PARAM = re.compile(r"^%para\d+_(\S+): (<.*)$")
_SUBGRAPH = re.compile(r"^subgraph @(\S+?)\(")
_TENSOR = re.compile(r"Tensor\[(\w+)\]")
_PREFIXES = ("PrimFunc_", "S_Prim_", "Prim_")


@dataclasses.dataclass
class TraceLine:
    """One ``# In file`` line: file path, line number, the source text of that line (stripped)."""
    file: str
    line: int
    code: str


@dataclasses.dataclass
class IRNode:
    primitive: str                 # e.g. "MatMul" (prefix PrimFunc_/S_Prim_ removed)
    inputs: list                   # dtype name of each tensor input ("Float16"), in order
    outputs: list                  # dtype names of the tensor outputs
    scope: str = ""                # "Default/model-LatentDiffusion/.../MatMul-op0"
    trace: list = dataclasses.field(default_factory=list)   # [TraceLine], outermost first
    subgraph: str = ""             # the sub-graph the node belongs to

    def dtypes(self):
        return list(self.inputs) + list(self.outputs)

    def where(self, root=None):
        """The innermost source line of ``root`` (a path prefix, e.g. the repository) or of any file,
        as ``path:line``; '' when the dump has no trace for the node."""
        line = self.innermost(root)
        return f"{line.file}:{line.line}" if line else ""

    def innermost(self, root=None):
        for t in reversed(self.trace):
            if root is None or t.file.startswith(root):
                return t
        return None


def primitive_name(callee):
    """``PrimFunc_MatMul`` -> ``MatMul``; ``@graph`` / ``%3`` (calls) -> None."""
    if callee.startswith(("@", "%")):
        return None
    for prefix in _PREFIXES:
        if callee.startswith(prefix):
            return callee[len(prefix):]
    return callee


def _split_types(text):
    """Top-level ``<...>`` items of a signature half: '<Tensor[F32], (2)>, <Int64, NoShape>' -> 2 items."""
    items, depth, start = [], 0, None
    for i, ch in enumerate(text):
        if ch == "<":
            if depth == 0:
                start = i + 1
            depth += 1
        elif ch == ">":
            depth -= 1
            if depth == 0 and start is not None:
                items.append(text[start:i])
    return items


def tensor_dtypes(text):
    """Dtypes of the tensors in a signature half (a tuple of tensors gives one entry per kind it holds)."""
    out = []
    for item in _split_types(text):
        out.extend(_TENSOR.findall(item))
    return out


def parse_ir(text):
    """IR dump text -> [IRNode] of every primitive node (structure nodes such as Load/MakeTuple included;
    :mod:`ldm.audit.checks` decides what is a kernel). The graph's inputs and Parameters come first, as
    nodes of primitive ``Parameter`` (their name in ``scope``, their dtype as the output)."""
    nodes, current, subgraph = [], None, ""
    for line in text.splitlines():
        m = _PARAM.match(line)
        if m:
            nodes.append(IRNode("Parameter", [], tensor_dtypes(m.group(2)), scope=m.group(1)))
            continue
        m = _SUBGRAPH.match(line)
        if m:
            subgraph, current = m.group(1), None
            continue
        m = _NODE.match(line)
        if m or _RETURN.match(line):
            name = primitive_name(m.group(1)) if m else None
            current = IRNode(name, [], [], subgraph=subgraph) if name else None
            if current is not None:
                nodes.append(current)
            continue
        if current is None:
            continue
        m = _SIGNATURE.match(line)
        if m:
            current.inputs, current.outputs = tensor_dtypes(m.group(1)), tensor_dtypes(m.group(2))
            continue
        m = _SCOPE.match(line)
        if m:
            current.scope = m.group(1)
            continue
        m = _TRACE.match(line)
        if m:
            current.trace.append(TraceLine(m.group(1), int(m.group(2)), m.group(3).strip()))
    return nodes


def entry_name(text):
    """The ``# IR entry: @name`` of a dump (the compiled function), or ''."""
    m = re.search(r"^# IR entry: @(\S+)", text, re.M)
    return m.group(1) if m else ""
