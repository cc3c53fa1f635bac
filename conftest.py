"""Pytest root: puts the repository on sys.path and runs MindSpore on CPU."""
import os

os.environ.setdefault("GLOG_v", "3")  # silence MindSpore's C++ INFO/WARNING logs in test output

# The longest test files first (measured 2026-12-06 with two workers: the new-concept demo alone takes ~5 min).
# With `-n 2 --dist loadfile` a file is handed to the next free worker in collection order, so a long file
# collected late becomes the suite's tail while the other worker idles; the order inside a file is unchanged.
LONGEST_FIRST = ("test_concept_demo.py", "test_controlnet_train.py", "test_train_tiny_model.py",
                 "test_dreambooth.py", "test_textual_inversion.py", "test_memory_estimate.py", "test_eval_fid.py",
                 "test_train_mindone_flags.py", "test_attention_full_unet.py", "test_train_distributed.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(LONGEST_FIRST)))
