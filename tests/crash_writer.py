"""Write checkpoint bundles in a loop (as a run does: commit the new one, then rotate the
oldest away) until killed. Loads only ``nnfit.files`` (no torch), so it starts in ~50 ms.

Usage: ``python crash_writer.py SRC RUN_DIR BLOB_DIR``; prints ``ready`` once writing starts.
"""

import os
import sys
import types


def main() -> None:
    src, run, blobs = sys.argv[1:4]
    pkg = types.ModuleType("nnfit")
    pkg.__path__ = [os.path.join(src, "nnfit")]  # nnfit.files without nnfit/__init__ (torch)
    sys.modules["nnfit"] = pkg
    from nnfit import files

    ckpts = os.path.join(run, "checkpoints")
    os.makedirs(ckpts, exist_ok=True)
    names = sorted(n for n in os.listdir(ckpts) if not n.startswith("."))
    i = int(names[-1].split("-")[1]) if names else 0
    payloads = [{name: open(os.path.join(blobs, str(k), name), "rb").read()
                 for name in ("state.safetensors", "state.json")} for k in range(3)]
    print("ready", flush=True)
    while True:
        i += 1
        files.write_bundle(os.path.join(ckpts, f"step-{i:09d}"), "checkpoint", payloads[i % 3])
        names = sorted(n for n in os.listdir(ckpts) if not n.startswith("."))
        for old in names[:-2]:
            files.remove_bundle(os.path.join(ckpts, old))


if __name__ == "__main__":
    main()
