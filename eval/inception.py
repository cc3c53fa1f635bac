"""The FID Inception-v3 (pytorch-fid's / TF's 2015-12-05 graph) in MindSpore, pool3 2048-d features.

Structure follows torchvision's Inception3 with the patches pytorch-fid applies for FID
(``pytorch_fid.inception.fid_inception_v3``): 1008 classes, average-pool branches that do not
count the padding (TensorFlow semantics), and a *max* pool branch in the last block (Mixed_7c).
Every convolution is bias-free and followed by BatchNorm (eps 1e-3) and ReLU.

Weights load from pytorch-fid's state dict (``Mixed_7c.branch_pool.conv.weight``, ``...bn.running_var``)
directly (``pt_inception-2015-12-05-6726825d.pth``, read without torch): each BatchNorm is folded
into its conv (w * g / sqrt(v + eps), b - m * g / sqrt(v + eps), in float64), so the MindSpore net
has ``conv.weight`` + ``conv.bias`` per block; our ``.ckpt`` stores those folded names.
"""
import os

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from ldm.errors import CheckpointError, UserError

from eval.images import resize_bilinear

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
DEFAULT_WEIGHTS = os.path.join("models", FID_WEIGHTS_NAME)
FID_INPUT_SIZE = 299
BN_EPS = 1e-3


class BasicConv2d(nn.Cell):
    """conv -> BatchNorm(eps 1e-3) -> ReLU of torchvision's BasicConv2d, with the (inference-only)
    BatchNorm folded into the conv's weight and bias at load time: MindSpore's CPU BatchNorm costs
    about half a conv on the large early feature maps, folding removes it (see load_weights)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        ph, pw = (padding, padding) if isinstance(padding, int) else padding
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode="pad",
                              padding=(ph, ph, pw, pw), has_bias=True)
        self.relu = nn.ReLU()

    def construct(self, x):
        return self.relu(self.conv(x))


def _avg_pool_same(x):
    """3x3 / stride 1 / pad 1 average that ignores the zero padding (TF's and pytorch-fid's patch)."""
    return ops.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool_stride2(x):
    return ops.max_pool2d(x, kernel_size=3, stride=2)


class FIDInceptionA(nn.Cell):
    def __init__(self, in_channels, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def construct(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_same(x))
        return ops.cat((b1, b5, b3, bp), axis=1)


class InceptionB(nn.Cell):
    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def construct(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return ops.cat((b3, bd, _max_pool_stride2(x)), axis=1)


class FIDInceptionC(nn.Cell):
    def __init__(self, in_channels, channels_7x7):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def construct(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        bd = self.branch7x7dbl_3(self.branch7x7dbl_2(bd))
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(bd))
        bp = self.branch_pool(_avg_pool_same(x))
        return ops.cat((b1, b7, bd, bp), axis=1)


class InceptionD(nn.Cell):
    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def construct(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(b7))
        return ops.cat((b3, b7, _max_pool_stride2(x)), axis=1)


class FIDInceptionE(nn.Cell):
    """InceptionE; ``pool='avg'`` for Mixed_7b, ``pool='max'`` for Mixed_7c (pytorch-fid's patch)."""

    def __init__(self, in_channels, pool):
        super().__init__()
        self.use_max_pool = pool == "max"
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def construct(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = ops.cat((self.branch3x3_2a(b3), self.branch3x3_2b(b3)), axis=1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = ops.cat((self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)), axis=1)
        if self.use_max_pool:
            pooled = ops.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool_same(x)
        return ops.cat((b1, b3, bd, self.branch_pool(pooled)), axis=1)


class FIDInceptionV3(nn.Cell):
    """Input: images (N, 3, 299, 299) scaled to [-1, 1]. Output: pool3 features (N, 2048).

    ``fc`` (1008 classes) is kept only so the weight file loads with every name accounted for.
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool="max")
        self.fc = nn.Dense(2048, 1008)

    def construct(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = _max_pool_stride2(x)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = _max_pool_stride2(x)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6a(x)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        return x.mean(axis=(2, 3))


# ---------------------------------------------------------------- weights

def fold_batchnorm(state_dict):
    """pytorch-fid names (conv.weight + bn.weight/bias/running_mean/running_var) -> folded
    conv.weight/conv.bias; names that are already folded (our .ckpt) or not BN pass through."""
    out = {}
    for name, value in state_dict.items():
        if name.endswith("num_batches_tracked") or ".bn." in name:
            continue
        out[name] = value
        if name.endswith(".conv.weight"):
            block = name[: -len("conv.weight")]
            try:
                gamma, beta = state_dict[block + "bn.weight"], state_dict[block + "bn.bias"]
                mean, var = state_dict[block + "bn.running_mean"], state_dict[block + "bn.running_var"]
            except KeyError:
                continue  # no BN beside it: an already-folded checkpoint (has conv.bias)
            scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + BN_EPS)
            out[name] = np.asarray(value, np.float64) * scale[:, None, None, None]
            out[block + "conv.bias"] = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * scale
    return out


def missing_weights_message(path):
    return (f"FID Inception weights not found: {path}. Expected pytorch-fid's file {FID_WEIGHTS_NAME} "
            f"(from https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            f"{FID_WEIGHTS_NAME}; nothing is downloaded at run time): put it at {DEFAULT_WEIGHTS} or "
            f"pass --ckpt_path; a MindSpore .ckpt converted with "
            f"`python -m eval.inception --convert {FID_WEIGHTS_NAME} fid_inception.ckpt` also works")


def read_inception_weights(path):
    """Read a pytorch-fid .pth (zip or legacy pickle), a .safetensors or our MindSpore .ckpt."""
    if not path or not os.path.isfile(path):
        raise UserError(missing_weights_message(path or DEFAULT_WEIGHTS))
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK") or head[:1] == b"\x80":
        from ldm.convert.torch_pickle import flatten_state_dict, load_torch_file
        return fold_batchnorm(flatten_state_dict(load_torch_file(path)))
    if path.endswith(".safetensors"):
        from eval.weight_files import read_safetensors
        return fold_batchnorm(read_safetensors(path))
    from ldm.io.ckpt_proto import read_ckpt  # pure Python: a corrupt .ckpt is one error, not a C++ crash
    return fold_batchnorm({name: v for name, v in read_ckpt(path).items() if not isinstance(v, str)})


def load_weights(net, state_dict, source="weights"):
    """Copy arrays into ``net``; any missing, unexpected or mis-shaped name is a CheckpointError."""
    params = {p.name: p for p in net.get_parameters()}
    missing = sorted(set(params) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(params))
    wrong = sorted(n for n in set(params) & set(state_dict)
                   if tuple(params[n].shape) != tuple(np.shape(state_dict[n])))
    if missing or unexpected or wrong:
        parts = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
            if names:
                parts.append(f"{label}: {len(names)} (e.g. {', '.join(names[:3])})")
        raise CheckpointError(f"{source} does not fit the FID Inception-v3: " + "; ".join(parts))
    for name, param in params.items():
        param.set_data(ms.Tensor(np.asarray(state_dict[name], dtype=np.float32)))


def build_fid_inception(ckpt_path=None):
    """FIDInceptionV3 in inference mode with weights from ``ckpt_path`` (default models/...pth)."""
    path = ckpt_path or DEFAULT_WEIGHTS
    state_dict = read_inception_weights(path)
    net = FIDInceptionV3()
    load_weights(net, state_dict, source=path)
    net.set_train(False)
    return net


class InceptionFeatureExtractor:
    """[0, 1] images of any size -> 2048-d pool3 features, exactly as pytorch-fid prepares them:
    bilinear resize to 299 (align_corners=False, no antialias), then 2x - 1."""

    def __init__(self, ckpt_path=None, compile=True):
        self.net = build_fid_inception(ckpt_path)
        # GRAPH-compiled once per batch shape (the bound construct, so the weights stay graph constants)
        self._forward = ms.jit(self.net.construct) if compile else self.net

    def __call__(self, images):
        """images: float32 (N, 3, H, W) in [0, 1] -> float32 (N, 2048)."""
        x = resize_bilinear(np.asarray(images, dtype=np.float32), FID_INPUT_SIZE, FID_INPUT_SIZE)
        x = 2.0 * x - 1.0
        return self._forward(ms.Tensor(x)).asnumpy()


def convert_to_ckpt(src, dst):
    """Write pytorch-fid's .pth as a MindSpore .ckpt with our names (checked against the network)."""
    net = FIDInceptionV3()
    load_weights(net, read_inception_weights(src), source=src)
    ms.save_checkpoint(net, dst)


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(allow_abbrev=False, description="Convert pytorch-fid's Inception weights to a MindSpore .ckpt.")
    parser.add_argument("--convert", nargs=2, metavar=("SRC_PTH", "DST_CKPT"), required=True,
                        help=f"read SRC ({FID_WEIGHTS_NAME}, torch-free) and write DST .ckpt")
    args = parser.parse_args(argv)
    convert_to_ckpt(*args.convert)
    print(f"wrote {args.convert[1]}")
    return 0


if __name__ == "__main__":
    from ldm.errors import run_cli
    run_cli(main)
