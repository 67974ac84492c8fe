"""A process killed in the middle of a store transaction leaves a consistent index."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from gpuguard.embed import BulkEmbedder
from gpuguard.index import VectorStore
from gpuguard.jobs import process_rag_documents

CHILD = textwrap.dedent(
    """
    import asyncio, sys, threading
    from gpuguard.embed import BulkEmbedder, EmbedderPair
    from gpuguard.index import VectorStore
    from gpuguard.jobs import process_rag_documents
    from gpuguard.testing import HashEmbedder

    class StallingStore(VectorStore):
        writes = 0

        def _insert_chunks(self, *args):
            super()._insert_chunks(*args)
            StallingStore.writes += 1
            if StallingStore.writes == 3:  # inside the third source's transaction
                print("STALLED", flush=True)
                threading.Event().wait()  # parked here until the parent kills the process

    store = StallingStore(sys.argv[1])
    bulk = BulkEmbedder(EmbedderPair(None, HashEmbedder(dimension=64)), batch_size=4)
    asyncio.run(process_rag_documents([sys.argv[2]], store=store, bulk=bulk))
    """
)


def test_killed_mid_transaction_then_rerun_completes(tmp_path: Path, bulk: BulkEmbedder) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(6):
        (folder / f"doc{i}.txt").write_text(f"document {i} " + "filler words " * 50)
    index = tmp_path / "index.db"

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(index), str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "STALLED"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    with VectorStore(index) as store:
        assert store.verify() == []
        assert len(store.source_hashes("document")) == 2  # the third write never committed
        result = asyncio.run(process_rag_documents([folder], store=store, bulk=bulk))
        assert (result.embedded, result.skipped) == (4, 2)
        assert store.verify() == []
        assert len(store.source_hashes("document")) == 6
