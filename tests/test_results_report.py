"""benchmarks/RESULTS.md, the README's results table and the model cards' StampBirds figures are exactly what
``python -m benchmarks.report`` renders from the committed JSON in benchmarks/results/ (so every number in them
matches its JSON), and every headline figure appears in the section it links to."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (ROOT / "benchmarks" / "report.py").is_file(),
                                reason="benchmarks/ is not next to the tests (installed test run)")


@pytest.fixture(scope="module")
def report():
    from benchmarks import report

    return report


def test_committed_files_equal_their_rendering(report):
    for path, text in report.rendered_files().items():
        assert path.read_text() == text, f"{path.relative_to(ROOT)} is stale: run python -m benchmarks.report"


def test_decision_json_matches_decide(report):
    committed = json.loads(report.DECISION.read_text())
    assert committed == json.loads(json.dumps(report.decide())), "run python -m benchmarks.report --decide"


def test_headline_figures_appear_in_their_sections(report):
    _, claims = report.headline()
    sections = {anchor: md for _, anchor, md in report.sections()}
    assert claims
    for figure, anchor in claims:
        assert anchor in sections, anchor
        assert figure in sections[anchor], f"headline figure {figure!r} not in section #{anchor}"


def test_headline_anchors_resolve_and_block_is_one_screen():
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    head = text.split("\nSections: ", 1)[0]
    assert len(head.splitlines()) <= 45
    ids = set(re.findall(r'<a id="([^"]+)"></a>', text))
    for link in re.findall(r"\]\(#([^)]+)\)", text):
        assert link in ids, link


def test_decide_rule(report):
    def recs(diffs):
        return {**{f"backswap/seed{i}": {"worst_group": 0.5} for i in range(len(diffs))},
                **{f"backswap_edge/seed{i}": {"worst_group": 0.5 + d} for i, d in enumerate(diffs)}}

    up, down, noisy = [0.05, 0.06, 0.04, 0.05], [-0.05, -0.06, -0.04, -0.05], [0.1, -0.1, 0.05, -0.06]
    assert report.decide({"crop": recs(up), "photo": recs(noisy)})["candidate_becomes_default"]
    d = report.decide({"crop": recs(up), "photo": recs(down)})
    assert not d["candidate_becomes_default"] and d["settings"]["photo"]["entirely_below_zero"]
