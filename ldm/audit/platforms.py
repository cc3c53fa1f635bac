"""Which devices a MindSpore primitive supports, read from its documentation ("Supported Platforms:").

MindSpore documents each public primitive's devices at the end of its class docstring, e.g.
``ops.operations.nn_ops.FlashAttentionScore`` lists only ````Ascend````, MatMul all three. Many
generated primitives (``mindspore.ops.auto_generate``) carry only "Refer to :func:`mindspore.ops.square`";
their platforms are then read from that function. Gradient primitives (``Conv2DBackpropFilter``,
``SoftmaxGrad``, ...) are not public and have no such section: they are looked up under their forward
primitive's name, and the answer says so (``source``).

A primitive with no class anywhere is ``unknown``; one whose documentation names no platform is
``undocumented``: both are reported, never treated as supported.
"""
import dataclasses
import functools
import importlib
import re

_PLATFORMS = re.compile(r"Supported Platforms:\s*((?:``\w+``\s*)+)")
_REFER = re.compile(r"Refer to :func:`(mindspore\.[\w.]+)`")
_EQUIVALENT = re.compile(r"is equivalent to\s+\.\. code-block::\s+(?:ops|mint|F)\.(\w+)\(")
# where primitive classes live (in this order)
CLASS_MODULES = ("mindspore.ops.auto_generate", "mindspore.ops.operations", "mindspore.ops",
                 "mindspore.ops.operations._grad_ops", "mindspore.ops.operations._inner_ops",
                 "mindspore.ops.operations.manually_defined")
# where the functions named by "Refer to" / "is equivalent to" live
FUNCTION_MODULES = ("mindspore.ops", "mindspore.ops.auto_generate", "mindspore.ops.function", "mindspore.mint",
                    "mindspore.ops.functional")
# gradient primitive -> the forward primitive whose platforms stand for it (a backward kernel ships
# with its forward one); suffix rules below cover the regular names
GRAD_FORWARD = {"Conv2DBackpropInput": "Conv2D", "Conv2DBackpropFilter": "Conv2D",
                "Conv2DTransposeBackpropInput": "Conv2DTranspose", "BiasAddGrad": "BiasAdd",
                "ConvolutionGrad": "Convolution", "DropoutGrad": "Dropout"}
_GRAD_SUFFIXES = ("GradV2", "GradExt", "Grad", "Backward")
# generated primitives without any platform text of their own -> the public function that emits them
# (read in MindSpore 2.8's sources; its docstring's platforms are read at run time). A primitive found
# undocumented and not listed here is reported: check which function emits it, then add it.
DOCUMENTED_VIA = {
    "Muls": "mindspore.ops.mul",                 # Tensor * number (_extends/parse/standard_method.py: muls_op)
    "MatMulExt": "mindspore.mint.matmul",        # ops/auto_generate/gen_ops_def.py matmul_ext
    "SplitWithSize": "mindspore.mint.split",     # ops/function/array_func.py split_ext (sizes given)
    "RemainderTensorScalar": "mindspore.ops.remainder",   # Tensor % number (multitype_ops/mod_impl.py)
}


@dataclasses.dataclass(frozen=True)
class Support:
    status: str              # "documented" | "undocumented" | "unknown"
    platforms: tuple = ()    # e.g. ("Ascend", "GPU", "CPU")
    source: str = ""         # what the answer was read from, e.g. "mindspore.ops.square"

    @property
    def ascend(self):
        return "Ascend" in self.platforms


def _import(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _find(name, modules):
    for mod_name in modules:
        mod = _import(mod_name)
        obj = getattr(mod, name, None) if mod is not None else None
        if obj is not None:
            return obj, f"{mod_name}.{name}"
    return None, ""


def _resolve_dotted(dotted):
    """'mindspore.ops.square' -> the object (or None)."""
    module, _, attr = dotted.rpartition(".")
    mod = _import(module)
    obj = getattr(mod, attr, None) if mod is not None else None
    if obj is None:
        obj, _ = _find(attr, FUNCTION_MODULES)
    return obj


def platforms_in(doc):
    """('Ascend', 'GPU', 'CPU') from a docstring's "Supported Platforms:" section, or None without one."""
    m = _PLATFORMS.search(doc or "")
    return tuple(re.findall(r"``(\w+)``", m.group(1))) if m else None


def _documented(obj, label):
    """Support from ``obj``'s docstring or the function it refers to; None if neither names platforms."""
    doc = getattr(obj, "__doc__", None) or ""
    found = platforms_in(doc)
    if found is not None:
        return Support("documented", found, label)
    for target in _REFER.findall(doc) + [f"mindspore.ops.{n}" for n in _EQUIVALENT.findall(doc)]:
        ref = _resolve_dotted(target)
        found = platforms_in(getattr(ref, "__doc__", None))
        if found is not None:
            return Support("documented", found, target)
    return None


def forward_of(primitive):
    """The forward primitive a gradient primitive belongs to, or None."""
    if primitive in GRAD_FORWARD:
        return GRAD_FORWARD[primitive]
    for suffix in _GRAD_SUFFIXES:
        if primitive.endswith(suffix) and len(primitive) > len(suffix):
            return primitive[:-len(suffix)]
    return None


@functools.lru_cache(maxsize=None)
def support(primitive):
    """:class:`Support` of an IR primitive name ("MatMul", "Conv2DBackpropFilter", ...)."""
    obj, label = _find(primitive, CLASS_MODULES)
    if obj is not None:
        found = _documented(obj, label)
        if found is not None:
            return found
    if primitive in DOCUMENTED_VIA:
        via = DOCUMENTED_VIA[primitive]
        found = platforms_in(getattr(_resolve_dotted(via), "__doc__", None))
        if found is not None:
            return Support("documented", found, f"{via} (emits {primitive})")
    forward = forward_of(primitive)
    if forward is not None:
        fwd = support(forward)
        if fwd.status == "documented":
            return Support("documented", fwd.platforms, f"{fwd.source} (forward of {primitive})")
    if obj is not None:
        return Support("undocumented", (), label)
    return Support("unknown")
