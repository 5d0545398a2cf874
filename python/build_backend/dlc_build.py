"""dlc's PEP 517 build backend: maturin's, except that a wheel is tagged (and repaired)
manylinux_2_36 unless the caller asks for another compatibility. maturin's own backend
builds `pip install .` and `pip wheel .` with `--compatibility off` (a `linux_x86_64`
tag PyPI refuses and other machines' pips skip); this keeps both working the same way
and makes the wheel `pip wheel .` writes one to ship: abi3 (CPython >= 3.9), with the
shared libraries manylinux does not promise (libffi, libzstd) copied in."""
import glob
import os
import shlex

import maturin
from maturin import *  # noqa: F401,F403  (every other hook as maturin defines it)

COMPATIBILITY = "manylinux_2_36"


def _with_compatibility(config_settings):
    settings = dict(config_settings or {})
    args = settings.get("maturin.build-args", settings.get("build-args"))
    if args is None:
        args = shlex.split(os.environ.get("MATURIN_PEP517_ARGS", ""))
    elif isinstance(args, str):
        args = shlex.split(args)
    if "--compatibility" not in args and "--manylinux" not in args:
        args = [*args, "--compatibility", COMPATIBILITY]
    settings["maturin.build-args"] = args
    settings.pop("build-args", None)
    return settings


def _drop_repaired_module():
    """maturin's repair renames the bundled libraries inside cargo's own copy of the
    module (target/*/deps/lib_dlc.so), so a second build that cargo finds up to date
    fails ("required library libzstd-<hash>.so.1 could not be located"). Removing that
    copy makes cargo link it again (seconds; nothing is recompiled)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
    for f in glob.glob(os.path.join(target, "*", "deps", "lib_dlc.so")) + glob.glob(
        os.path.join(target, "*", "lib_dlc.so")
    ):
        os.remove(f)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _drop_repaired_module()
    return maturin.build_wheel(wheel_directory, _with_compatibility(config_settings), metadata_directory)
