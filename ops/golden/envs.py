"""Isolated reference environments under .data/golden-envs, one venv per reference stack.

torch is not reinstalled per venv: a venv gets a .pth line pointing at a folder of symlinks to the
project venv's torch, torchvision, triton and NVIDIA packages (the same build, 2.14.1, for every
reference, so torch's own kernels are not a variable). A constraints file pins exactly those versions,
so pip can never decide to upgrade or uninstall them (which would delete files through the symlinks).
"""
from __future__ import annotations

import logging
import subprocess
import sys
import sysconfig
from pathlib import Path

log = logging.getLogger(__name__)
# Dist names whose files live in the shared torch folder (the rest of torch's deps are pure Python and
# are installed into each venv normally).
_LINKED = ("torch", "torchgen", "functorch", "torchvision", "torchvision.libs", "triton", "nvidia", "cuda")
_LINKED_DISTS = ("torch", "torchvision", "triton", "nvidia_", "cuda_")


def project_site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def torch_link_dir(root: Path) -> Path:
    """Create (once) root/_torch-link: symlinks to the project venv's torch stack; returns the folder."""
    site = project_site_packages()
    link = root / f"_torch-link-py{sys.version_info.major}{sys.version_info.minor}"
    if link.is_dir():
        return link
    tmp = link.with_name(link.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for entry in site.iterdir():
        name = entry.name
        if name in _LINKED or (name.endswith(".dist-info") and name.startswith(_LINKED_DISTS)):
            target = tmp / name
            if not target.exists():
                target.symlink_to(entry)
    tmp.rename(link)
    return link


def linked_constraints(link: Path) -> list[str]:
    """name==version for every dist in the link folder, read from its dist-info folder names."""
    pins = []
    for d in sorted(link.glob("*.dist-info")):
        name, version = d.name[: -len(".dist-info")].split("-", 1)
        pins.append(f"{name}=={version}")
    return pins


def make_env(root: Path, name: str, python: str, requirements: list[str], *, link_torch: bool,
             no_deps: list[str] = ()) -> Path:
    """Create root/name (a venv for `python`) with `requirements` installed; returns its python path.

    A stamp file records the requirement list, so a second build reuses an env that is already right."""
    env = root / name
    py = env / "bin" / "python"
    stamp = env / ".golden-requirements"
    want = "\n".join([python, *requirements, "--no-deps", *no_deps]) + "\n"
    if py.exists() and stamp.is_file() and stamp.read_text() == want:
        return py
    log.info("creating %s (%s)", env, python)
    subprocess.run([python, "-m", "venv", "--clear", str(env)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if link_torch:
        link = torch_link_dir(root)
        site = Path(subprocess.check_output(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
        (site / "_golden_torch.pth").write_text(str(link) + "\n")
        constraints = env / "constraints.txt"
        constraints.write_text("\n".join(linked_constraints(link)) + "\n")
        pip += ["-c", str(constraints)]
        # Named so pip resolves their pure-Python deps (sympy, jinja2, ...); the pins keep the linked builds.
        requirements = ["torch", "torchvision", *requirements]
    if requirements:
        subprocess.run([*pip, *requirements], check=True)
    if no_deps:
        subprocess.run([*pip, "--no-deps", *no_deps], check=True)
    stamp.write_text(want)
    return py
