"""The Markdown of `plan -o markdown` and review mode stays inert whatever the policies,
inventory, tags or faults say (issue 9 G): no fence closed early, no raw HTML, no links or
images, no @mentions, no new blocks. Checked with a real CommonMark parser (markdown-it-py,
with GFM tables) and against golden files of hostile strings.

Regenerate the golden files with
`VMKEEP_UPDATE_GOLDEN=1 pytest tests/unit/test_markdown_is_inert.py`.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from markdown_it.token import Token

from reconciler.model import KeepRules, Limits, Plan, PlanWarning, PolicySet, Severity
from reconciler.planner import plan
from reconciler.render import render_markdown
from reconciler.render.markdown import one_line
from reconciler.render.review import review_markdown
from reconciler.review import review
from tests.unit.estate import at, marked_snapshot, policy, state, uuid_of, vm

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = os.environ.get("VMKEEP_UPDATE_GOLDEN") == "1"
NOW = at("2026-11-25 12:00")
SLOT = at("2026-11-25 01:00")

#: What a pull request author or a VM owner might type to rewrite the comment.
HOSTILE = (
    "x\n```\n\n## Approved by security\n<img src=x onerror=alert(1)> @everyone "
    "[click](https://evil.example/) ![i](https://evil.example/i.png) www.evil.example "
    "<https://evil.example> &lt;b&gt; | cell | ~~gone~~ **bold** $x$ \u202eevil\u202c `tick`"
)

PARSER = MarkdownIt("commonmark").enable(["table", "strikethrough"])
#: The only HTML vmkeep writes itself.
OWN_HTML = re.compile(r"(<details( open)?><summary>[^<>]*</summary>|</details>)")
MENTION = re.compile(r"(?<![\w`])@[A-Za-z0-9]")
BARE_LINK = re.compile(r"(?i)(https?://|(?<![\w.])www\.)")


def hostile_plan(word: str) -> Plan:
    """A real plan (creates, deletes, coverage problems) whose every text slot holds `word`."""
    web = vm(word, snapshots=[marked_snapshot("gold", uuid_of(word), SLOT - timedelta(days=d),
                                              f"s{d}") for d in range(1, 6)])
    made = plan(
        PolicySet((policy("gold", snapshot_keep=KeepRules(last=2)),), "f" * 40),
        state([web, vm("other")]), NOW, Limits(max_deletes_per_run=1),
    )
    assert made.actions and made.held  # deletions over the budget: held back, listed
    warning = PlanWarning("fault", Severity.WARNING, word, "vc", made.actions[0].vm, word, ())
    return replace(
        made,
        blocked=True,
        blocked_reason=word,
        unobserved={word: word},
        warnings=(*made.warnings, warning),
        coverage=tuple(replace(c, note=word, policy=word) for c in made.coverage),
        retention=tuple(d._replace(reasons=(word,)) for d in made.retention),
        policy_revision=word,
    )


def hostile_review_markdown(word: str) -> str:
    base = PolicySet((policy("gold", names=("web*",)),), "a" * 40)
    head = PolicySet((replace(policy("gold", names=("web*", word)), description=word),),
                     "b" * 40)
    observed = state([vm(word)])
    limits = Limits()
    return review_markdown(review(base, head, plan(base, observed, NOW, limits),
                                  plan(head, observed, NOW, limits)))


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert path.read_text() == text, f"{path} differs; rerun with VMKEEP_UPDATE_GOLDEN=1"


def assert_inert(markdown: str, word: str) -> None:
    tokens = PARSER.parse(markdown)
    flat: list[Token] = []
    for token in tokens:
        flat.append(token)
        flat.extend(token.children or ())
    kinds = [t.type for t in flat]
    html = [t.content.strip() for t in flat if t.type in ("html_block", "html_inline")]
    assert all(OWN_HTML.fullmatch(h) for h in html), html
    assert "link_open" not in kinds and "image" not in kinds
    assert kinds.count("heading_open") == 1  # vmkeep's own title, nothing a text could add
    # every code block vmkeep opened is one fence, closed where vmkeep closed it
    opened = re.findall(r"^(`{3,})diff$", markdown, re.MULTILINE)
    fences = [t for t in flat if t.type == "fence"]
    assert [t.markup for t in fences] == opened and opened
    assert all(t.content.count("\n") == len(t.content.splitlines()) for t in fences)
    assert "s_open" not in kinds  # no strikethrough either
    for token in flat:
        if token.type == "text":
            assert not MENTION.search(token.content), token.content
            assert not BARE_LINK.search(token.content), token.content
    # the text is shown, not swallowed: in the code blocks whole, on one line
    assert any(one_line(word) in t.content for t in fences), markdown


def test_a_hostile_plan_renders_as_the_golden_file() -> None:
    check_golden("plan/hostile.md", render_markdown(hostile_plan(HOSTILE)))


def test_a_hostile_review_renders_as_the_golden_file() -> None:
    check_golden("review/hostile.md", hostile_review_markdown(HOSTILE))


def test_hostile_strings_in_a_plan_stay_inert() -> None:
    assert_inert(render_markdown(hostile_plan(HOSTILE)), HOSTILE)


def test_a_hostile_policy_description_cannot_close_the_review_fence() -> None:
    markdown = hostile_review_markdown(HOSTILE)
    assert_inert(markdown, HOSTILE)
    fences = [t for t in PARSER.parse(markdown) if t.type == "fence"]
    policies = fences[0].content.splitlines()
    assert policies[0] == "~ policy gold changed"
    assert all(line.startswith("    ") for line in policies[1:])  # one line per field


HOSTILE_PIECES = st.sampled_from([
    "`", "```", "~~~", "<", ">", "<img src=x>", "</details>", "<!--", "@", "@everyone",
    "[", "]", "(", ")", "![a](b)", "https://", "www.", "\n", "\r", "\u2028", "\u202e", "|",
    "*", "_", "~", "&amp;", "$", "\\", "#", "- ", "1. ", "> ", ":", "a", "x.y", " ",
])


@settings(max_examples=int(os.environ.get("VMKEEP_PROPERTY_EXAMPLES", "200")), deadline=None)
@given(st.lists(HOSTILE_PIECES, min_size=1, max_size=12).map("".join))
def test_any_text_in_any_slot_stays_inert(word: str) -> None:
    assert_inert(render_markdown(hostile_plan(word)), word)
    assert_inert(hostile_review_markdown(word), word)
