"""The commands in README.md and docs/*.md hold on a fresh clone: every file they name exists or is declared the
reader's own, and the ones a fresh clone can run, run.

The rules, in order:
1. Commands are the lines of ```bash blocks: a trailing backslash continues a line, `#` starts a comment and
   `&&` separates commands. README's walkthrough block is tests/test_readme.py's (it builds the user's data
   first) and is not repeated here.
2. A file-like word (it has a known file extension, ends with '/', or starts with a top-level entry of the
   repository, `..` or `runs/`) is either shipped (a path inside the repository), one of USER_FILES (the
   names the docs give the reader's own files) or under runs/ (an earlier run's output). Anything else fails
   the static test: a doc must not point at a file a fresh clone lacks (../shared, a data YAML we do not ship)
   without saying it is the reader's.
3. A command runs when it is `python <shipped script>` or `python -m <shipped module>` naming only shipped
   files (runs/ paths too, once an earlier command of its block wrote them) and no URL, webcam (`--source 0`),
   CUDA device or placeholder (`...`, `<...>`). Never run: pip, pytest, tensorboard and torchrun (installs,
   this suite, a server, several GPUs), `--resume` (needs a killed run: tests/test_readme.py kills one) and
   benchmarks/*.py (minutes of measurement by design; tests/benchmarks/ covers their code).
4. Each block runs in its own copy of the repository (nothing is written into the checkout), with the
   shortening rewrites of SHORTEN: train 1 epoch, every size 64 px, profiler 1 timed run on PyTorch and ONNX
   Runtime, export without TFLite (its ~20 s conversion is covered by tests/cli/test_export.py). The rest of
   each command is the doc's own, so a renamed flag, file or default fails here.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FILE_EXTENSIONS = {".py", ".pt", ".yaml", ".yml", ".onnx", ".tflite", ".torchscript", ".mp4", ".avi", ".jpg", ".jpeg",
                   ".png", ".txt", ".json", ".csv", ".streams", ".md"}
TOP_LEVEL = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")} - {"runs"}
# The reader's own files, as the docs name them (a doc may use these without shipping them).
USER_FILES = {"best.pt", "a.pt", "b.pt", "best.onnx", "best.tflite", "best-int8.tflite", "best_openvino_model/",
              "my.yaml", "my-data.yaml", "data.yaml", "data/your.yaml", "my_hyp.yaml", "clip.mp4", "images/",
              "shots/*.jpg", "list.txt", "cams.streams", "my-video.mp4",
              "yolov5nu.pt", "yolov5n.pt"}  # checkpoints the reader has from ultralytics and YOLOv5
NEVER_RUN = {"pip", "pytest", "tensorboard", "torchrun"}
# script: [(flag, values)] set on the command (replacing the doc's values, or appended)
SHORTEN = {
    "train.py": [("--epochs", ["1"]), ("--imgsz", ["64"])],
    "val.py": [("--imgsz", ["64"])],
    "export.py": [("--imgsz", ["64"])],
    "flops.py": [("--imgsz", ["64"]), ("--runs", ["1"]), ("--warmup", ["0"]), ("--backends", ["pytorch", "onnx"]),
                      ("--noplots", [])],
}
IMGSZ_ALIASES = ("--imgsz", "--img", "--img-size")


@dataclass
class Command:
    doc: str
    block: int
    words: list[str]

    def __str__(self) -> str:
        return f"{self.doc}: {shlex.join(self.words)}"


def bash_blocks(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if path.name == "README.md":  # tests/test_readme.py runs this one with the user's data it builds
        text = re.sub(r"<!-- walkthrough -->\s*```bash\n.*?```", "", text, flags=re.S)
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def doc_commands() -> list[Command]:
    commands = []
    for path in DOCS:
        for i, block in enumerate(bash_blocks(path)):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                while words:
                    cut = words.index("&&") if "&&" in words else len(words)
                    commands.append(Command(str(path.relative_to(ROOT)), i, words[:cut]))
                    words = words[cut + 1:]
    return commands


def file_like(word: str) -> bool:
    if word.startswith("-") or "://" in word:
        return False
    first = word.split("/")[0]
    return (Path(word.rstrip("/")).suffix.lower() in FILE_EXTENSIONS or word.endswith("/")
            or ("/" in word and first in TOP_LEVEL | {"..", "runs"}))


def shipped(word: str) -> bool:
    path = (ROOT / word).resolve()
    return path.exists() and ROOT in path.parents and not word.startswith("runs/")


def unknown_files(cmd: Command) -> list[str]:
    return [w for w in cmd.words if file_like(w) and not shipped(w) and w not in USER_FILES
            and not w.startswith("runs/")]


def script_of(words: list[str]) -> str | None:
    """The shipped script a `python ...` command runs (module form too), else None."""
    if len(words) < 2 or words[0] != "python":
        return None
    if words[1] == "-m":
        module = words[2] if len(words) > 2 else ""
        path = ROOT / (module.replace(".", "/") + ".py")
        return str(path.relative_to(ROOT)) if path.is_file() else None
    return words[1] if words[1].endswith(".py") and shipped(words[1]) else None


def why_not_run(cmd: Command, cwd: Path | None) -> str | None:
    """The rule that keeps `cmd` from running, or None when it runs."""
    words = cmd.words
    if words[0] in NEVER_RUN or words[:3] == ["python", "-m", "pytest"]:
        return f"{words[0] if words[0] != 'python' else 'pytest'} is never run"
    script = script_of(words)
    if script is None:
        return "not a shipped python script"
    if script.startswith("benchmarks/"):
        return "benchmarks/*.py measure for minutes"
    if "--resume" in words:
        return "--resume needs an interrupted run"
    if any("://" in w for w in words):
        return "names a URL"
    if any(w in ("...", "…") or w.startswith("<") or w.endswith(">") for w in words):
        return "has a placeholder"
    if any(a == "--source" and b.isdigit() for a, b in zip(words, words[1:])):
        return "needs a webcam"
    if any(a == "--device" and b != "cpu" for a, b in zip(words, words[1:])):
        return "needs a CUDA device"
    for w in words:
        if w in USER_FILES:
            return f"names the reader's {w}"
        if w.startswith("runs/") and (cwd is None or not (cwd / w).exists()):
            return f"names {w}, which no earlier command of its block wrote"
    return None


def set_option(words: list[str], flag: str, values: list[str]) -> list[str]:
    """`flag values` on the command: the doc's values of that flag (or an alias) replaced, else appended."""
    aliases = IMGSZ_ALIASES if flag == "--imgsz" else (flag,)
    out, i = [], 0
    while i < len(words):
        if words[i] in aliases:
            i += 1
            while i < len(words) and not words[i].startswith("-"):
                i += 1
            continue
        out.append(words[i])
        i += 1
    return out + [flag, *values]


def shortened(words: list[str]) -> list[str]:
    script = script_of(words)
    for flag, values in SHORTEN.get(Path(script).name if script else "", []):
        words = set_option(words, flag, values)
    if script == "export.py" and "--include" in words:  # TFLite's conversion alone takes ~20 s
        words = [w for w in words if w != "tflite"]
    return [sys.executable, *words[1:]]


def copy_repo(dst: Path) -> Path:
    return Path(shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(
        ".git", "runs", "tests", "__pycache__", ".pytest_cache", "*.onnx", "*.tflite", "*.torchscript",
        "*_openvino_model")))


def test_docs_name_only_shipped_or_the_readers_files():
    """Static and instant: the rule 2 check over every command, and no pointer to ../shared in any doc's text."""
    commands = doc_commands()
    assert len(commands) > 40, "the command parser found too few commands"
    problems = [f"{c}: names {', '.join(unknown_files(c))} (neither shipped nor one of USER_FILES)"
                for c in commands if unknown_files(c)]
    problems += [f"{p.relative_to(ROOT)}: mentions ../shared, a folder a fresh clone does not have"
                 for p in DOCS if "../shared" in p.read_text(encoding="utf-8")]
    assert not problems, "\n".join(problems)


def test_doc_links_point_at_shipped_files():
    """Static: every relative link and image of README.md and docs/*.md (`[x](path)`, `<img src="path">`) names a file
    the repository ships, so the front page's picture and pointers cannot dangle after a move or rename."""
    problems = []
    for doc in DOCS:
        for m in re.finditer(r'\]\(([^)\s]+)\)|src="([^"]+)"', doc.read_text(encoding="utf-8")):
            target = (m.group(1) or m.group(2)).split("#")[0]
            if target and "://" not in target and not target.startswith("mailto:"):
                path = (doc.parent / target).resolve()
                if not path.exists() or ROOT not in path.parents:
                    problems.append(f"{doc.relative_to(ROOT)}: links {target}, which the repository does not ship")
    assert not problems, "\n".join(problems)


def test_readme_stays_a_front_page():
    """The README is what a newcomer reads first: what it is, two commands, one model table, the walkthrough, links.
    Measurement tables and their history belong in docs/speed.md and docs/accuracy.md, which it links."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150, "README.md grew past 150 lines: move the detail into docs/"
    for page in ("docs/speed.md", "docs/accuracy.md", "data/demo/README.md", "LICENSE"):
        assert f"]({page})" in text, f"README.md does not link {page}"


def test_rules_classify_doc_words():
    assert file_like("data/coco8.yaml") and file_like("coco128.yaml") and file_like("../shared/data/coco128/data.yaml")
    assert file_like("images/") and file_like("runs/train/exp/weights/best.pt") and file_like("models/yolov5n.yaml")
    assert not file_like("--imgsz") and not file_like("ablations/faster-bn-shared-af") and not file_like("rtsp://x/y")
    assert shipped("data/coco8.yaml") and shipped("data/images") and not shipped("../shared/data/coco128/data.yaml")
    assert not shipped("coco128.yaml")
    words = shlex.split("python train.py --img 640 --epochs 100 --data data/coco8.yaml")
    assert shortened(words)[1:] == ["train.py", "--data", "data/coco8.yaml", "--epochs", "1", "--imgsz", "64"]
    words = shlex.split("python flops.py --cfg models/yolov5n.yaml --backends tflite --runs 50")
    assert shortened(words)[1:] == ["flops.py", "--cfg", "models/yolov5n.yaml", "--imgsz", "64", "--runs", "1",
                                    "--warmup", "0", "--backends", "pytorch", "onnx", "--noplots"]


@pytest.mark.slow
def test_shipped_doc_commands_run(tmp_path, capsys):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "MPLBACKEND": "Agg"}
    env.pop("PYTHONPATH", None)  # the scripts find their own folder, as on a user's machine
    ran, skipped, repos = [], [], {}
    for cmd in doc_commands():
        key = (cmd.doc, cmd.block)
        reason = why_not_run(cmd, repos.get(key))
        if reason:
            skipped.append(f"{cmd}  [{reason}]")
            continue
        if key not in repos:  # one fresh copy per block, made when its first command runs
            repos[key] = copy_repo(tmp_path / f"repo{len(repos)}")
        cwd = repos[key]
        argv = shortened(cmd.words)
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{cmd}\nran as: {shlex.join(argv)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        ran.append(str(cmd))
    with capsys.disabled():
        print(f"\ndocs: {len(ran)} command(s) ran:\n  " + "\n  ".join(ran))
        print(f"docs: {len(skipped)} not run:\n  " + "\n  ".join(skipped))
    assert len(ran) >= 8, "fewer doc commands ran than the docs had runnable ones"


def test_the_project_ships_its_license_and_says_so():
    """AGPL-3.0, as YOLOv5 and the ultralytics library it imports: the full text at the top, named by the README,
    and the demo model's provenance and terms beside it."""
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("GNU AFFERO GENERAL PUBLIC LICENSE") and "Version 3, 19 November 2007" in text
    assert len(text.splitlines()) == 661  # the whole text, not a pointer to it
    assert "GNU Affero General Public License v3.0** ([LICENSE](LICENSE))" in (ROOT / "README.md").read_text()
    demo = (ROOT / "data/demo/README.md").read_text()
    assert "## Provenance and terms" in demo and "AGPL-3.0" in demo
