"""The state folder's checkpoints: what ``discard`` removes once a configuration is done."""

import tempfile

from bench.ledger import Ledger


def test_discard_removes_the_checkpoint_and_the_partial_writes_of_a_killed_process_only(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.save("aaaa", {"epoch": 1})
    ledger.save("bbbb", {"epoch": 1})
    folder = ledger.checkpoint_path("aaaa").parent

    def partial(config_hash: str) -> str:  # named as save_atomic names the file it writes before renaming
        handle, name = tempfile.mkstemp(dir=folder, prefix=f".{config_hash}.pt.", suffix=".tmp")
        open(handle).close()
        return name.rsplit("/", 1)[1]

    partial("aaaa")
    other = partial("bbbb")
    ledger.discard("aaaa")
    assert sorted(p.name for p in folder.iterdir()) == sorted([other, "bbbb.pt"])
    ledger.discard("never-saved")  # nothing to remove is not an error
