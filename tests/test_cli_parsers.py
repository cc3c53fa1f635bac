"""Every argument parser in the project refuses abbreviated flags: MindONE's ``--mode 0`` must never be
taken as ``--model_config 0`` by argparse's prefix matching."""
import glob
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARSER_CALL = re.compile(r"(?<!class )\b(?:argparse\.ArgumentParser|OneLineParser)\((?P<args>[^)]*)", re.S)


def test_every_parser_sets_allow_abbrev_false():
    files = [f for f in glob.glob(os.path.join(REPO, "**", "*.py"), recursive=True)
             if "/.venv" not in f and "/site-packages/" not in f]
    calls, missing = 0, []
    for path in files:
        text = open(path, encoding="utf-8").read()
        compile(text, path, "exec")          # also catches a repeated keyword such as allow_abbrev
        for match in PARSER_CALL.finditer(text):
            calls += 1
            if "allow_abbrev=False" not in match.group("args"):
                missing.append(f"{os.path.relpath(path, REPO)}:{text.count(chr(10), 0, match.start()) + 1}")
    assert calls >= 15
    assert not missing, f"parsers that accept abbreviations: {missing}"


def test_training_parser_refuses_a_prefix_of_a_flag():
    import pytest
    from ldm.errors import UserError
    from ldm.train.config import parse_config
    with pytest.raises((SystemExit, UserError)):
        parse_config(["--model_conf", "configs/tiny-v2.yaml", "--data_path", "x"])
