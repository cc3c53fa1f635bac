"""Every argument parser in the project refuses abbreviated flags: MindONE's ``--mode 0`` must never be
taken as ``--model_config 0`` by argparse's prefix matching."""
import ast
import glob
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARSER_NAMES = ("ArgumentParser", "OneLineParser")


def _parser_calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in PARSER_NAMES:
                yield node


def test_every_parser_sets_allow_abbrev_false():
    files = [f for f in glob.glob(os.path.join(REPO, "**", "*.py"), recursive=True)
             if "/.venv" not in f and "/site-packages/" not in f]
    calls, missing = 0, []
    for path in files:
        tree = ast.parse(open(path, encoding="utf-8").read(), path)     # a file that does not parse fails here
        for call in _parser_calls(tree):
            calls += 1
            flags = {k.arg: k.value for k in call.keywords}
            if not (isinstance(flags.get("allow_abbrev"), ast.Constant) and flags["allow_abbrev"].value is False):
                missing.append(f"{os.path.relpath(path, REPO)}:{call.lineno}")
    assert calls >= 15
    assert not missing, f"parsers that accept abbreviations: {missing}"


def test_training_parser_refuses_a_prefix_of_a_flag():
    from ldm.errors import UserError
    from ldm.train.config import parse_config
    with pytest.raises((SystemExit, UserError)):
        parse_config(["--model_conf", "configs/tiny-v2.yaml", "--data_path", "x"])
