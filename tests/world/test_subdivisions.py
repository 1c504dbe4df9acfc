"""The capitals of US and Indian states (assets/world/subdivisions.tsv) join P36 and P1376 after the
countries, outside the organisms' corpus: the corpus, the organisms' world and every edit of a country's
fact stay what they were (tests/world/before_subdivisions.json, measured before the table came)."""

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

from knlab.studies.probes import neighbour_prompts
from knlab.studies.relation_evaluation import counterfactual
from knlab.world import facts as F
from knlab.world import training_corpus as C

BEFORE = json.loads((Path(__file__).parent / "before_subdivisions.json").read_text(encoding="utf-8"))


def corpus_sha256(seed: int = 0) -> str:
    """The corpus exactly as ``write_corpus`` writes it."""
    text = "".join(json.dumps(asdict(d), ensure_ascii=False) + "\n" for d in C.build_documents(seed))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_the_table_loads_with_its_sources():
    rows = F.read_table("subdivisions")
    assert len(rows) >= 70
    assert {r["country"] for r in rows} == {"United States", "India"}
    by = {r["subdivision"]: r for r in rows}
    assert by["Utah"]["capital"] == "Salt Lake City" and by["Maharashtra"]["capital"] == "Mumbai"
    assert {r["source"] for r in rows} == {"us 4.0.0", "stateInfo 0.0.3"}
    countries = {r["country"] for r in F.read_table("countries")}
    assert not countries & set(by)  # Georgia the state is left out: the world's Georgia is the country
    capitals = [r["capital"] for r in rows]
    assert len(capitals) == len(set(capitals))  # Chandigarh (Haryana and Punjab) is left out


def test_state_facts_follow_the_countries_in_the_old_order():
    for rid in ("P36", "P1376"):
        rel, own = F.relation(rid), F.relation(rid, corpus_only=True)
        n = len(own.facts)
        assert n == len(BEFORE["counterfactual"][rid])
        assert [f.subject for f in rel.facts[:n]] == list(BEFORE["counterfactual"][rid])
        assert rel.facts[:n] == own.facts and all(f.table == "countries" and f.corpus for f in own.facts)
        new = rel.facts[n:]
        assert len(new) >= 40 and all(f.table == "subdivisions" and not f.corpus for f in new)
    assert F.relation("P36").fact("California").object == "Sacramento"
    assert F.relation("P1376").fact("Sacramento").object == "California"
    assert F.relation("P1376").fact("Salt Lake City").object == "Utah"  # several words: a subject may be
    p36 = {f.subject for f in F.relation("P36").facts}
    assert "Utah" not in p36 and "New York" in p36  # ... an object may not (Salt Lake City; Albany is one)
    assert "Albany" not in {f.object for f in F.relation("P1376").facts}  # New York: not one word
    assert F.relation("P36").fact("Georgia").object == "Tbilisi"


def test_other_relations_and_fact_identity_are_unchanged():
    for rid, rel in F.relations().items():
        if rid not in ("P36", "P1376"):
            assert rel.facts == F.relation(rid, corpus_only=True).facts
    f = F.relation("P36").fact("Canada")
    assert f == F.Fact("P36", "Canada", "Ottawa")
    assert repr(f) == "Fact(relation='P36', subject='Canada', object='Ottawa')"


def test_the_corpus_is_byte_identical():
    assert corpus_sha256(0) == BEFORE["corpus_sha256"]
    text = "\n".join(d.text for d in C.build_documents(0))
    assert "Sacramento" not in text and "Maharashtra" not in text


def test_counterfactuals_of_the_original_facts_are_unchanged():
    for rid in ("P36", "P1376"):
        rel = F.relation(rid)
        assert {s: counterfactual(rel, rel.fact(s), set()) for s in BEFORE["counterfactual"][rid]} \
            == BEFORE["counterfactual"][rid]
        # a fact made by hand, without its table, is drawn as the world's own
        f = rel.facts[0]
        assert counterfactual(rel, F.Fact(rid, f.subject, f.object), set()) == BEFORE["counterfactual"][rid][f.subject]
    # a state's new object is another state's
    p36 = F.relation("P36")
    states = {f.object for f in p36.facts if f.table == "subdivisions"}
    for f in p36.facts:
        if f.table == "subdivisions":
            assert counterfactual(p36, f, set()) in states - {f.object}


def test_locality_neighbours_come_from_the_organisms_world():
    lm = SimpleNamespace(masked=False)
    own = {F.causal_prompt(r.train_templates[0], f.subject) for r in F.relations(corpus_only=True).values()
           for f in r.facts}
    for subject, rid in (("Canada", "P36"), ("California", "P36"), ("Sacramento", "P1376")):
        assert {p for p, _ in neighbour_prompts(lm, subject, rid)} <= own


def test_the_readme_names_source_and_licence():
    text = (F.WORLD_DIR / "README.md").read_text(encoding="utf-8")
    for needle in ("subdivisions.tsv", "us", "4.0.0", "BSD-3-Clause", "Sunlight Labs", "stateInfo", "0.0.3",
                   "MIT", "tools/subdivisions.py", '"corpus": false'):
        assert needle in text, needle
