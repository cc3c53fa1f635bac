"""Setup functions for tests/cli_table.py cases: each makes the bad input a case needs in its folder."""
import os


def file_named_out(folder):
    """A regular file where an output folder should go."""
    with open(os.path.join(folder, "out"), "w", encoding="utf-8") as f:
        f.write("not a folder\n")


def non_utf8_prompts(folder):
    with open(os.path.join(folder, "prompts.txt"), "wb") as f:
        f.write(b"a red circle\ncaf\xe9 au lait\n")
