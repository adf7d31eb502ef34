"""Build hook: compile the optional native Tick encoder; without a C compiler the package is pure Python."""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCES = ("connector/kite/_native.c", "connector/serde/_speedups.c")
SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"


class SpeedupsHook(BuildHookInterface):  # type: ignore[misc]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if os.environ.get("KITE_NO_SPEEDUPS") or self.target_name != "wheel":
            return
        built = [target for source in SOURCES if (target := self._compile(source, version)) is not None]
        if not built:
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":
            build_data["force_include"].update(built)

    def _compile(self, source: str, version: str) -> tuple[str, str] | None:
        """(built file, its place in the wheel), or None when there is no working C compiler."""
        root = Path(self.root)
        target = source.removesuffix(".c") + SUFFIX
        out = root / target if version == "editable" else Path(tempfile.mkdtemp()) / Path(target).name
        cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
        command = [
            *cc,
            "-O2",
            "-shared",
            "-fPIC",
            "-I",
            sysconfig.get_paths()["include"],
            str(root / source),
            "-o",
            str(out),
        ]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            self.app.display_warning(f"{source} not built, pure Python is used: {detail.strip()[:300]}")
            return None
        return str(out), target
