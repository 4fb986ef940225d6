"""Source code and config files: kept verbatim as one section, tagged with their language."""

from __future__ import annotations

from docmill.models import ParsedDocument, Section
from docmill.parsers.detect import extension, file_name
from docmill.parsers.text import decode_text, normalize_newlines

# fmt: off
LANGUAGES: dict[str, str] = {
    "py": "python", "js": "javascript", "jsx": "javascript", "ts": "typescript", "tsx": "typescript",
    "go": "go", "rs": "rust", "java": "java", "c": "c", "h": "c", "cpp": "cpp", "cc": "cpp", "hpp": "cpp",
    "cs": "csharp", "rb": "ruby", "php": "php", "swift": "swift", "kt": "kotlin", "scala": "scala",
    "sh": "shell", "bash": "shell", "zsh": "shell", "sql": "sql", "r": "r", "lua": "lua", "pl": "perl",
    "yaml": "yaml", "yml": "yaml", "toml": "toml",
}
# fmt: on
# fmt: off
_FILENAME_LANGUAGES: dict[str, str] = {
    "Dockerfile": "dockerfile", "Makefile": "make", "GNUmakefile": "make", "makefile": "make",
}
# fmt: on


def language_of(name: str) -> str:
    """Language of a source file from its name ('text' when unknown)."""
    base = file_name(name)
    if base.startswith("Dockerfile"):
        return "dockerfile"
    return _FILENAME_LANGUAGES.get(base) or LANGUAGES.get(extension(name), "text")


def parse(data: bytes, name: str) -> ParsedDocument:
    """Parse a source file into one verbatim section (line endings normalized, no heading path)."""
    text, encoding = decode_text(data)
    # Indentation is meaning in code, so only surrounding blank lines are removed.
    body = normalize_newlines(text).strip("\n").rstrip()
    language = language_of(name)
    return ParsedDocument(
        title=file_name(name) or name,
        sections=[Section(text=body)] if body.strip() else [],
        mime=f"text/x-{language}",
        metadata={"language": language, "encoding": encoding},
    )
