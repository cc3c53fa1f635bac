"""Chunked == standard attention on the full-size SD 2.x UNet, forward and gradients, within 1e-5 (fp32).

The model runs in its own interpreter (tests/full_unet_attention.py): 866 M parameters, 8x8 latents,
16-row chunks. Measured 2026-12-06: output identical, gradients within 2e-6 of magnitudes up to 3.
"""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_full_size_sd2_unet_chunked_equals_standard():
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "full_unet_attention.py")], cwd=REPO,
                          capture_output=True, text=True, timeout=900, env=dict(os.environ, GLOG_v="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["parameters"] == 865910724
    assert len(result["diff"]) >= 2 + 8            # output, input gradient, q/k/v/out weights of two attentions
    for name, diff in result["diff"].items():
        assert diff <= 1e-5, (name, diff, result["magnitude"][name])
        assert result["magnitude"][name] > 1e-3, (name, "a vanishing gradient would prove nothing")
