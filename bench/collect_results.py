"""Assemble bench/RESULTS.md from the per-area result files in bench/results/ (each written by its own benchmark,
with the command that made it). Run: python bench/collect_results.py"""

from pathlib import Path

HERE = Path(__file__).parent
ORDER = ["quality", "learning_curve", "train_speed", "train_speed_mask", "train_profile", "rules", "train", "formats", "base", "db",
         "build", "io", "fuzz", "eval", "eval_speed", "constrained", "bot", "bot_demo", "bot_g7", "bot_g7_domain",
         "serve_profile", "export_gguf",
         "loop", "loop_active_gemma", "loop_active_full", "loop_active_gpu", "feedback_loop"]
HEADER = """# tooltune: measured results

Every figure below was measured on this project's development machine (2 CPU cores, no GPU) unless a section says
otherwise, by the command given in its section. Sections are copied from `bench/results/<area>.md`, which each
benchmark writes; this file is regenerated with `python bench/collect_results.py`.

"""


def demote(markdown: str) -> str:
    """Every heading one level down (each file's title becomes a section of this page); code blocks untouched."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        lines.append("#" + line if line.startswith("#") and not fenced else line)
    return "\n".join(lines)


def main() -> None:
    files = {p.stem: p for p in sorted((HERE / "results").glob("*.md"))}
    ordered = [files.pop(name) for name in ORDER if name in files] + list(files.values())
    parts = [HEADER]
    for path in ordered:
        text = demote(path.read_text(encoding="utf-8").strip())
        parts.append(f"{text}\n\n_(from `bench/results/{path.name}`)_\n")
    (HERE / "RESULTS.md").write_text("\n".join(parts), encoding="utf-8")
    print(f"wrote {HERE / 'RESULTS.md'} from {len(ordered)} result files")


if __name__ == "__main__":
    main()
