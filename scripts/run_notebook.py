"""Execute a notebook top to bottom in a real Jupyter kernel; exit 1 on any cell error or past the time limit.

    python scripts/run_notebook.py notebooks/mlp_chapter.ipynb [--timeout=180] [--out=runs/notebook.ipynb]

CI runs the chapter's notebook this way (nbclient with the environment's ipykernel), on the real data. The
notebook in the repository stays without outputs; `--out` keeps an executed copy to look at.
"""

from __future__ import annotations

import argparse
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds for the whole notebook")
    parser.add_argument("--out", default="", help="write the executed notebook here")
    args = parser.parse_args()
    import nbclient
    import nbformat

    notebook = nbformat.read(args.notebook, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=int(args.timeout), kernel_name="python3",
                                     resources={"metadata": {"path": "notebooks"}})
    start = time.perf_counter()
    try:
        client.execute()
    except Exception as e:  # noqa: BLE001 -- a cell error or a timeout: one line, exit 1
        print(f"error: {args.notebook}: {type(e).__name__}: {str(e).strip().splitlines()[-1]}", file=sys.stderr)
        return 1
    finally:
        if args.out:
            nbformat.write(notebook, args.out)
    seconds = time.perf_counter() - start
    if seconds > args.timeout:
        print(f"error: {args.notebook}: took {seconds:.0f} s, over the {args.timeout:.0f} s limit", file=sys.stderr)
        return 1
    print(f"{args.notebook}: {len(notebook.cells)} cells executed in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
