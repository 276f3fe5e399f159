"""Cheap checks of the documentation site (no mkdocs needed): nav pages exist, every concept has a page with
its API section, every Markdown file is reachable, and the generated CLI reference covers ``build_parser()``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
from pathlib import Path

import pytest
import yaml
from _helpers import load_script

import robustlab
from robustlab.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MKDOCS = ROOT / "mkdocs.yml"

pytestmark = pytest.mark.skipif(not MKDOCS.exists(), reason="no mkdocs.yml (installed package without the docs)")


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [p for item in node for p in _nav_pages(item)]
    if isinstance(node, dict):
        return [p for value in node.values() for p in _nav_pages(value)]
    return []


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(MKDOCS.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def nav(config) -> list[str]:
    return [p for p in _nav_pages(config["nav"]) if not p.startswith(("http://", "https://"))]


@pytest.fixture(scope="module")
def gen_cli():
    return load_script(DOCS / "gen_cli.py", "robustlab_docs_gen_cli")


def test_every_nav_page_exists(nav):
    missing = [p for p in nav if not (DOCS / p).is_file()]
    assert not missing, f"mkdocs.yml nav lists pages that do not exist under docs/: {missing}"
    assert len(nav) == len(set(nav)), "a page is listed twice in the nav"


def test_every_markdown_file_is_in_the_nav(nav):
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert not pages - set(nav), f"pages not reachable from the nav: {sorted(pages - set(nav))}"


def test_build_is_strict_and_hooks_exist(config):
    assert config.get("strict") is True
    for hook in config.get("hooks", []):
        assert (ROOT / hook).is_file(), hook


def _concept_packages() -> list[str]:
    """Public subpackages and top-level modules of robustlab (``losses``, ..., ``metrics``, ``pipeline``)."""
    src = Path(robustlab.__file__).parent
    return sorted(p.stem for p in src.iterdir() if not p.name.startswith("_")
                  and ((p / "__init__.py").is_file() or p.suffix == ".py"))


def test_every_concept_subpackage_has_an_api_section(nav):
    text = "\n".join((DOCS / p).read_text(encoding="utf-8") for p in nav)
    documented = set(re.findall(r"^::: robustlab\.(\w+)", text, flags=re.M))
    packages = set(_concept_packages())
    assert {"losses", "attacks", "metrics"} <= packages  # the discovery itself works
    missing = packages - documented - {"cli"}  # the CLI has its generated reference page instead
    assert not missing, f"subpackages without a '::: robustlab.<name>' API section in a nav page: {sorted(missing)}"
    assert "<!-- cli-reference -->" in (DOCS / "cli.md").read_text(encoding="utf-8")


def test_concept_pages_have_an_example_and_references(nav):
    for page in (p for p in nav if p.startswith("concepts/")):
        text = (DOCS / page).read_text(encoding="utf-8")
        assert "```python" in text or "```bash" in text, f"{page} has no runnable example"
        assert "## References" in text or page == "concepts/testing.md", f"{page} has no References section"


def _walk(parser: argparse.ArgumentParser, prefix: str = "robustlab"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _walk(sub, f"{prefix} {name}")


def _sections(markdown: str) -> dict[str, str]:
    parts = re.split(r"^## (robustlab[^\n]*)$", markdown, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_cli_reference_covers_every_command_and_option(gen_cli):
    parser = build_parser()
    sections = _sections(gen_cli.render(parser))
    commands = list(_walk(parser))
    assert {"robustlab train", "robustlab bench run", "robustlab results export"} <= {c for c, _ in commands}
    for command, sub in commands:
        assert command in sections, f"no section for {command!r}"
        body = sections[command]
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            for name in action.option_strings or [action.metavar or action.dest]:
                assert f"`{name}" in body, f"{command}: option {name!r} missing from the CLI reference"
            if action.help:
                assert action.help.split()[0] in body


def test_cli_reference_picks_up_new_options(gen_cli):
    parser = build_parser()
    train = next(sub for command, sub in _walk(parser) if command == "robustlab train")
    train.add_argument("--brand-new-option", type=int, default=7, help="an option added after the docs were written")
    section = _sections(gen_cli.render(parser))["robustlab train"]
    assert "`--brand-new-option BRAND_NEW_OPTION`" in section and "added after the docs" in section


def test_cli_hook_expands_the_marker(gen_cli):
    out = gen_cli.on_page_markdown("# CLI\n\n<!-- cli-reference -->\n", page=None, config=None, files=None)
    assert "<!-- cli-reference -->" not in out and "## robustlab train" in out


def test_raw_logs_referenced_by_pages_exist(nav):
    for page in nav:
        text = (DOCS / page).read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+\.(?:jsonl|json|csv))\)", text):
            assert (DOCS / page).parent.joinpath(target).resolve().is_file(), f"{page} links to missing {target}"


def test_no_notes_folder():
    assert not (ROOT / "notes").exists(), "per-issue logs belong in the docs' results pages, not notes/"


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.M | re.S)


def _doc_commands() -> list[tuple[str, str]]:
    """``robustlab ...`` lines of the docs' bash blocks, and the README's (blocks and inline code) that are
    concrete commands (no ``a|b`` alternatives, ``[optional]`` parts, ``...`` or ``;``)."""
    out = []
    for page in [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]:
        text = page.read_text(encoding="utf-8")
        lines = [ln for block in _blocks(text, "bash") for ln in block.replace("\\\n", " ").splitlines()]
        if page.name == "README.md":
            lines += [c for c in re.findall(r"`(robustlab [^`]+)`", text) if " --" in c]  # not bare names
        for line in lines:
            line = line.split("  #")[0].strip()
            if line.startswith("robustlab ") and not any(t in line for t in ("|", "[", "...", ";")):
                out.append((page.relative_to(ROOT).as_posix(), line))
    return out


def test_documented_commands_parse():
    """Every ``robustlab ...`` line in a bash block of the docs is accepted by the current parsers."""
    import shlex

    commands = _doc_commands()
    assert len(commands) >= 20 and any(c.startswith("robustlab bench run") for _, c in commands)
    for page, line in commands:
        parser = build_parser()
        try:
            args, extras = parser.parse_known_args(shlex.split(line)[1:])
        except SystemExit as e:  # argparse reports the error on stderr and exits 2
            raise AssertionError(f"{page}: the documented command does not parse: {line}") from e
        if extras:
            assert getattr(args, "accepts_free_options", False), f"{page}: unrecognized {extras} in: {line}"


def _python_examples() -> list[tuple[str, str]]:
    return [(p.relative_to(DOCS).as_posix(), code) for p in sorted(DOCS.rglob("*.md"))
            for code in _blocks(p.read_text(encoding="utf-8"), "python")]


def test_python_examples_compile():
    examples = _python_examples()
    assert len(examples) >= 12
    for page, code in examples:
        compile(code, page, "exec")


@pytest.mark.slow
@pytest.mark.parametrize("page, code", _python_examples(), ids=lambda v: v if v.endswith(".md") else "")
def test_python_examples_run(page, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, page, "exec"), {"__name__": "docs_example"})


@pytest.fixture(scope="module")
def rst():
    return load_script(DOCS / "griffe_rst.py", "robustlab_docs_griffe_rst").rst_to_markdown


def test_docstring_rst_becomes_markdown(rst):
    src = ("Loss :math:`-\\log p_y`, see :class:`~robustlab.losses.Loss` and :func:`fit`.\n\n"
           "Example::\n\n    robustlab train --data digits\n\n"
           ".. math::\n\n    R = \\sigma \\Phi^{-1}(p)\n\n"
           ">>> 1 + 1\n2\n\nEnd.")
    out = rst(src)
    assert "\\(-\\log p_y\\)" in out and "`robustlab.losses.Loss`" in out and "`fit`" in out and ":class:" not in out
    assert "Example:\n\n```bash\nrobustlab train --data digits\n```" in out
    assert "$$\nR = \\sigma \\Phi^{-1}(p)\n$$" in out
    assert "```pycon\n>>> 1 + 1\n2\n```" in out and out.endswith("End.")
    fenced = "```python\nx = 1  # a::b\n```"
    assert rst(fenced) == fenced


def test_api_docstrings_convert_without_loss_of_text(rst):
    """Every public docstring converts: no reST role or directive is left, no line of prose is dropped."""
    import inspect

    for name in _concept_packages():
        module = importlib.import_module(f"robustlab.{name}")
        for obj in [module, *(getattr(module, n) for n in getattr(module, "__all__", []))]:
            doc = inspect.getdoc(obj) if (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj)) else None
            if not doc:
                continue
            out = rst(doc)
            assert not re.search(r":(class|func|meth|mod|data|attr|math):`", out), (name, obj)
            assert ".. math::" not in out
            words = lambda s: re.findall(r"[A-Za-z]{4,}", s)  # noqa: E731
            prose = re.sub(r":\w+:`|\.\. math::", "`", doc)  # the role and directive names are meant to go
            assert set(words(prose)) <= set(words(out)), (name, obj)


def test_readme_links_to_docs_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [t for t in re.findall(r"\]\(([^)#\s]+)\)", text) if not t.startswith(("http://", "https://"))]
    assert any(t.startswith("docs/") for t in targets), "the README links to the documentation"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_every_results_page_shows_its_commands(nav):
    pages = [p for p in nav if p.startswith("results/") and p != "results/index.md"]
    assert len(pages) >= 5
    for page in pages:
        text = (DOCS / page).read_text(encoding="utf-8")
        commands = [ln for block in _blocks(text, "bash") for ln in block.splitlines()
                    if re.match(r"\s*(nice )?(\.venv/bin/)?(python |robustlab |make )", ln)]
        assert commands, f"{page}: no command block (```bash) showing how its tables were produced"
        assert f"]({page.removeprefix('results/')})" in (DOCS / "results/index.md").read_text(encoding="utf-8"), \
            f"{page} is not linked from results/index.md"


@pytest.mark.slow
def test_getting_started_runs_as_written(tmp_path, monkeypatch):
    """Run every command of the getting-started page in order (epochs, test points and draws shortened)."""
    import shlex

    from robustlab.cli import main

    shared = ROOT.parent / "shared"
    if not (shared / "datasets" / "mnist-t10k").is_dir():
        pytest.skip("the page's MNIST steps need ../shared/datasets/mnist-t10k")
    work = tmp_path / "repo"
    work.mkdir()
    (tmp_path / "shared").symlink_to(shared)
    monkeypatch.chdir(work)
    text = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    spec = _blocks(text, "yaml")[0]
    spec = re.sub(r"epochs: \d+", "epochs: 1", re.sub(r"n_test: \d+", "n_test: 50", spec))
    (work / "study.yaml").write_text(spec, encoding="utf-8")
    shorten = [(r"--epochs \d+", "--epochs 1"), (r"--n-test \d+", "--n-test 50"), (r"--n \d+", "--n 200"),
               (r"--severities [\d,]+", "--severities 1")]
    commands = [c for p, c in _doc_commands() if p == "docs/getting-started.md"]
    assert any("bench run" in c for c in commands)
    for command in commands:
        for pattern, repl in shorten:
            command = re.sub(pattern, repl, command)
        argv = shlex.split(command)[1:]
        if argv[0] in ("attack", "evaluate", "conformal", "shift", "certify") and "--n-test" not in argv:
            argv += ["--n-test", "50"]
        assert main(argv) == 0, command
    assert (work / "runs" / "study" / "report.html").is_file() and (work / "runs" / "study" / "results.csv").is_file()


def test_cli_reference_lists_every_registered_objective_and_loss_option(gen_cli):
    import inspect

    from robustlab.losses import LOSSES
    from robustlab.training import OBJECTIVES

    text = gen_cli.keyword_options_markdown()
    for registry in (OBJECTIVES, LOSSES):
        for name in registry.available():
            row = next((ln for ln in text.splitlines() if ln.startswith(f"| `{name}` |")), None)
            assert row is not None, f"{name} missing from the keyword-options tables"
            for p in inspect.signature(registry.spec(name).factory).parameters.values():
                if p.kind == p.KEYWORD_ONLY and p.name not in ("num_samples", "reduction"):
                    assert f"`{p.name}`" in row, (name, p.name)


@pytest.mark.parametrize("page, module, registry", [
    ("concepts/data.md", "robustlab.data", "DATASETS"), ("concepts/noise.md", "robustlab.noise", "NOISES"),
    ("concepts/losses.md", "robustlab.losses", "LOSSES"), ("concepts/models.md", "robustlab.models", "MODELS"),
    ("concepts/training.md", "robustlab.training", "OBJECTIVES"), ("concepts/attacks.md", "robustlab.attacks", "ATTACKS"),
    ("concepts/conformal.md", "robustlab.conformal", "SCORES"), ("concepts/shift.md", "robustlab.shift", "CORRUPTIONS"),
    ("concepts/bench.md", "robustlab.bench", "EVALUATIONS"),
])
def test_concept_page_names_every_registered_item(page, module, registry):
    """A concept page's prose names every item of its registry (a new item fails until it is documented)."""
    text = (DOCS / page).read_text(encoding="utf-8")
    names = getattr(importlib.import_module(module), registry).available()
    assert names
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"{page} does not mention {missing}"
