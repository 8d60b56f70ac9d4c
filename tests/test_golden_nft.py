"""Golden compile outputs of the nft backend for every example policy."""
import json

import pytest
from goldens import EXAMPLES, ROOT, golden

from ctkit import pipeline
from ctkit.backends.nft import generate as nft
from ctkit.backends.nft import text as nft_text

GOLDEN = ROOT / "tests" / "golden" / "nft"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_nft_json_golden(path):
    document = nft.generate(pipeline.compile_file(path).plan)
    golden(GOLDEN / f"{path.stem}.json", json.dumps(document, indent=1) + "\n")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_nft_text_golden(path):
    document = nft.generate(pipeline.compile_file(path).plan)
    golden(GOLDEN / f"{path.stem}.nft", nft_text.render(document))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_kernel_rule_names_its_policy_rule(path):
    compiled = pipeline.compile_file(path)
    document = nft.generate(compiled.plan)
    ids = {r.id for c in compiled.plan.table.chains for r in c.rules}
    ids |= {f"toggle/{t.name}" for t in compiled.plan.table.toggles}  # the toggle-state chain
    for cmd in document["nftables"]:
        rule = cmd.get("add", {}).get("rule")
        if rule:
            assert rule["comment"].split(": ")[0] in ids


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_rule_count_is_the_number_of_rules_generated(path):
    """An apply that sends nothing says how many rules the table holds without generating it
    (generate.rule_count): the same number as the rules the document adds."""
    from ctkit.backends.nft.generate import generate, rule_count
    plan = pipeline.compile_file(path).plan
    assert rule_count(plan.table) == sum(1 for c in generate(plan)["nftables"] if "rule" in c.get("add", {}))
