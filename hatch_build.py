"""Build hook: compiles the optional native decoder and encoder; without a C compiler, pure Python is used.

Before compiling, it renders ``connector/kite/_layout.h`` from the tick layout declared in
``connector/kite/_layout.py``, so a build never compiles against a stale layout.

The extensions are compiled and linked the way setuptools builds C extensions: Python's own ``CC``,
``CFLAGS``, ``CCSHARED`` and ``LDSHARED`` (from ``sysconfig``), then the environment's ``CC``,
``CPPFLAGS``, ``CFLAGS``, ``LDSHARED`` and ``LDFLAGS`` on top, with ``-Wall -Wextra``.

- ``KITE_NO_SPEEDUPS=1`` skips the native part (pure Python).
- ``KITE_REQUIRE_SPEEDUPS=1`` makes a failed compilation fail the install instead of falling back to
  pure Python (for images and CI, where the native part is expected).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCES = ("connector/kite/_native.c", "connector/serde/_speedups.c")
LAYOUT_HEADER = ("connector.kite._layout_gen", "header")  # python -m ... writes connector/kite/_layout.h
SUFFIX = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
WARNINGS = ("-Wall", "-Wextra")


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _split(value: str | None) -> list[str]:
    return shlex.split(value or "")


def render_layout(root: Path) -> None:
    """Writes ``connector/kite/_layout.h`` from the layout, in a child Python: this process then loads
    nothing of the package it is about to build (the C modules it replaces included)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-m", *LAYOUT_HEADER], cwd=root, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"connector/kite/_layout.py does not render: {done.stderr.strip()}")


def compile_command(source: str, obj: str) -> list[str]:
    """Compiles ``source`` to the position-independent object file ``obj``."""
    cc = _split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    return [
        *cc,
        "-O2",  # Python's CFLAGS, if any, come after and choose the optimisation level
        *_split(sysconfig.get_config_var("CFLAGS")),
        *_split(sysconfig.get_config_var("CCSHARED")),
        "-fPIC",
        *WARNINGS,
        *_split(os.environ.get("CPPFLAGS")),
        *_split(os.environ.get("CFLAGS")),
        "-I",
        sysconfig.get_paths()["include"],
        "-c",
        source,
        "-o",
        obj,
    ]


def link_command(obj: str, out: str) -> list[str]:
    """Links ``obj`` into the extension module ``out``."""
    ldshared = _split(os.environ.get("LDSHARED") or sysconfig.get_config_var("LDSHARED"))
    if not ldshared:
        ldshared = [*_split(os.environ.get("CC") or "cc"), "-shared"]
    elif os.environ.get("CC") and not os.environ.get("LDSHARED"):
        ldshared[:1] = _split(os.environ["CC"])  # Python's LDSHARED starts with its own compiler
    if sys.platform != "darwin" and "-shared" not in ldshared:
        ldshared.append("-shared")
    return [*ldshared, *_split(os.environ.get("LDFLAGS")), obj, "-o", out]


class SpeedupsHook(BuildHookInterface):  # type: ignore[misc]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        if _flag("KITE_NO_SPEEDUPS"):
            if _flag("KITE_REQUIRE_SPEEDUPS"):
                raise RuntimeError("KITE_NO_SPEEDUPS and KITE_REQUIRE_SPEEDUPS are both set: unset one")
            return
        render_layout(Path(self.root))
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
        work = Path(tempfile.mkdtemp())
        out = root / target if version == "editable" else work / Path(target).name
        obj = str(work / Path(source).with_suffix(".o").name)
        try:
            for command in (compile_command(str(root / source), obj), link_command(obj, str(out))):
                done = subprocess.run(command, check=True, capture_output=True, text=True)
                if done.stderr.strip():  # warnings: the sources are meant to build clean
                    self.app.display_warning(f"{source}: {done.stderr.strip()[:2000]}")
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = (getattr(exc, "stderr", "") or str(exc)).strip()
            if _flag("KITE_REQUIRE_SPEEDUPS"):
                raise RuntimeError(
                    f"KITE_REQUIRE_SPEEDUPS is set, but {source} did not build: {detail}"
                ) from exc
            self.app.display_warning(f"{source} not built, pure Python is used: {detail[:300]}")
            return None
        return str(out), target
