"""The README and docs/: a page a newcomer reads to the end, whose links
lead somewhere in this repository, and whose configurations are valid.

    README.md        under README_LINES_MAX lines; no http(s) address but
                     localhost's (hospital networks have no internet)
    README, docs/    every relative link ([text](path#anchor), images too)
                     names a file or folder that exists, and an anchor a
                     heading of that page; no link to another site
    TOML blocks      a whole configuration (or a [section] of one) shown in
                     the README or a mode's page parses (config.parse)
"""

import glob
import os
import re
import sys

import pytest

from pyfwd.control import config

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
README_LINES_MAX = 350
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?"
                  r"(?:\s+\"[^\"]*\")?\s*\)")
URL = re.compile(r"https?://[^\s)\]>`'\"]+")


def _pages():
    pages = [os.path.join(ROOT, "README.md")]
    pages += sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"),
                              recursive=True))
    return pages


def _rel(path):
    return os.path.relpath(path, ROOT)


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _prose(text):
    """text without its code blocks and inline code: what renders as
    links and headings."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading):
    """The anchor GitHub gives a heading: lower case, punctuation out
    (backticks too), spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text):
    """Every heading's anchor in a Markdown page (a repeated heading gets
    -1, -2, ... as on GitHub)."""
    seen, out = {}, set()
    for m in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", FENCE.sub("", text),
                         re.M):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(text):
    """The link targets of a page, code left out."""
    return LINK.findall(_prose(text))


def broken_links(path):
    """(target, why) of each link of the page at path that leads nowhere
    in this repository."""
    bad = []
    here = os.path.dirname(path)
    for target in links(_read(path)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):
            host = re.sub(r"^[a-z]+://", "", target, flags=re.I)
            if not host.startswith(LOCAL_HOSTS):
                bad.append((target, "a link outside the repository"))
            continue
        file, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(here, file)) if file else path
        if not dest.startswith(ROOT + os.sep) and dest != ROOT:
            bad.append((target, "outside the repository"))
        elif not os.path.exists(dest):
            bad.append((target, "no such file or folder"))
        elif anchor and dest.endswith(".md") and \
                anchor not in anchors(_read(dest)):
            bad.append((target, f"no heading with anchor #{anchor} in "
                                f"{_rel(dest)}"))
    return bad


@pytest.mark.parametrize("path", _pages(), ids=_rel)
def test_links_lead_somewhere_in_the_repository(path):
    bad = broken_links(path)
    assert not bad, f"{_rel(path)}: " + "; ".join(
        f"({t}): {why}" for t, why in bad)


def test_readme_is_a_page_to_read_to_the_end():
    lines = _read(os.path.join(ROOT, "README.md")).count("\n")
    assert lines <= README_LINES_MAX, (
        f"README.md: {lines} lines; move detail into docs/ (at most "
        f"{README_LINES_MAX})")


def test_readme_names_no_address_outside_this_machine():
    text = _read(os.path.join(ROOT, "README.md"))
    far = [u for u in URL.findall(text)
           if not re.sub(r"^https?://", "", u).startswith(LOCAL_HOSTS)]
    assert not far, f"README.md names addresses on the internet: {far}"


def test_readme_keeps_the_two_commands_ci_runs():
    text = _read(os.path.join(ROOT, "README.md"))
    assert "./tools/run demo" in text and "./tools/run test" in text
    assert "./tools/run test" in _read(os.path.join(ROOT, ".ci", "run"))


def _toml_blocks(path):
    """The ```toml blocks of a page that start with a [section]: whole
    configurations or parts of one (not bare keys of a table)."""
    for block in re.findall(r"^```toml\n(.*?)^```", _read(path), re.S | re.M):
        first = next((ln for ln in block.splitlines()
                      if ln.strip() and not ln.lstrip().startswith("#")), "")
        if first.startswith("["):
            yield block


CONFIG_PAGES = ["README.md"] + [f"docs/{p}.md" for p in (
    "dr", "nat", "tun", "l7", "ha", "ecmp", "config")]


@pytest.mark.parametrize("page", CONFIG_PAGES)
def test_configurations_shown_are_valid(page, tmp_path):
    path = os.path.join(ROOT, page)
    if not os.path.exists(path):
        pytest.fail(f"{page} is missing")
    pem = tmp_path / "cert.pem"
    pem.write_text("certificate and key\n")
    for block in _toml_blocks(path):
        text = re.sub(r'"/etc/pyfwd/[\w.-]+\.pem"', f'"{pem}"', block)
        if "[engine]" not in text:
            text = '[engine]\niface = "eth0"\n' + text
        if "[[vip]]" not in text:
            text += ('\n[[vip]]\naddress = "10.0.0.100"\nport = 80\n'
                     '[[vip.real]]\naddress = "10.0.0.11"\n')
        try:
            config.parse(text, page)
        except Exception as exc:
            pytest.fail(f"{page}: a configuration shown does not parse: "
                        f"{exc}\n{block}")


def test_anchor_rule_matches_github():
    assert slug("Waiting for frames: `--poll` (issue 18)") == \
        "waiting-for-frames---poll-issue-18"
    assert slug("Set-up: two commands") == "set-up-two-commands"
    text = "# A\n## B\n## B\n```\n# not a heading\n```\n"
    assert anchors(text) == {"a", "b", "b-1"}


def test_a_broken_link_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "p.md"
    (tmp_path / "docs" / "q.md").write_text("# Q\n## Here\n")
    page.write_text("[ok](q.md#here) [no](r.md) [anchor](q.md#there) "
                    "[far](https://example.org/) [me](http://localhost:1/) "
                    "`[code](x.md)`\n")
    found = {t: why for t, why in broken_links(str(page))}
    assert set(found) == {"r.md", "q.md#there", "https://example.org/"}
