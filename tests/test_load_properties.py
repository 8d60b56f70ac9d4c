"""Property tests: whatever a user feeds the loader, the answer is a model or a clean error."""
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctkit.compile.lower import lower
from ctkit.errors import PolicyError
from ctkit.policy.lint import lint
from ctkit.policy.load import _has_bad_float, load_document, load_text, parse_text
from ctkit.policy.model import Policy

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=30,
)

# documents that look like policies, so the search reaches past the top-level checks
keys = st.sampled_from(["version", "table", "conntrack", "notrack", "helpers", "chains", "rules", "input",
                        "web", "policy", "action", "jump", "goto", "protocol", "protocols", "ports", "dport",
                        "saddr", "peers", "name", "ct_state", "helper", "max", "timeouts", "udp", "log"])
leaves = (st.sampled_from([1, 53, "53", "1-2", "tcp", "udp", "accept", "drop", "web", "input", "10.0.0.0/8",
                           "2001:db8::1", "ftp", "untracked", True, None, -1, 70000])
          | st.integers() | st.text(max_size=8))
policy_like = st.recursive(leaves, lambda c: st.lists(c, max_size=4) | st.dictionaries(keys, c, max_size=5),
                           max_leaves=40)


def _check(doc):
    try:
        policy = load_document(doc)
    except PolicyError as exc:
        assert exc.problems and all(p.message for p in exc.problems)
        return
    assert isinstance(policy, Policy)
    # a model that loads must also lint and lower without crashing
    lint(policy)
    lower(policy)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_value(doc):
    _check(doc)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({"version": st.just(1)}, optional={
    "chains": st.dictionaries(st.sampled_from(["input", "output", "web", "x"]), policy_like, max_size=3),
    "notrack": st.lists(policy_like, max_size=3),
    "helpers": st.lists(policy_like, max_size=2),
    "conntrack": policy_like,
}))
def test_policy_like_documents(doc):
    _check(doc)


@settings(max_examples=200)
@given(st.text(max_size=200))
def test_any_text(text):
    for fmt in ("json", "yaml", None):
        try:
            load_text(text, "fuzz", fmt)
        except PolicyError:
            pass


def _outcome(text: str):
    """The model load_text builds from JSON text, or the problems it reports (without lines: layout may differ)."""
    try:
        return load_text(text, "fuzz.json", "json")
    except PolicyError as exc:
        return [(p.pointer, p.message, p.hint) for p in exc.problems]


def _assert_round_trip(doc):
    """JSON text -> document -> JSON text (laid out differently) -> document: the same document and
    the same outcome (an equal model, or the same problems) both times."""
    text = json.dumps(doc)
    try:
        data, _, _ = parse_text(text, "fuzz.json", "json")
    except PolicyError:
        assert _has_bad_float(doc)  # NaN and Infinity are not JSON: refused before any document exists
        return
    assert data == doc
    again = json.dumps(data, indent=2)
    assert parse_text(again, "fuzz.json", "json")[0] == data
    first, second = _outcome(text), _outcome(again)
    assert first == second
    if isinstance(first, Policy):
        assert lower(first) == lower(second)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values | st.fixed_dictionaries({"version": st.just(1)}, optional={
    "chains": st.dictionaries(st.sampled_from(["input", "output", "web", "x"]), policy_like, max_size=3),
    "notrack": st.lists(policy_like, max_size=3),
    "sets": st.dictionaries(st.sampled_from(["s", "t"]), policy_like, max_size=2),
    "conntrack": policy_like,
}))
def test_json_text_round_trip(doc):
    _assert_round_trip(doc)


def test_examples_round_trip_through_json_text():
    """Every example (YAML or JSON) dumped as JSON text loads to the same model as the file itself."""
    from goldens import EXAMPLES

    from ctkit.policy.load import load_file
    for path in EXAMPLES:
        data, _, _ = parse_text(path.read_text(), str(path))
        text = json.dumps(data)
        policy = load_text(text, "example.json", "json")
        assert policy == load_file(path), path
        assert policy.chains or policy.notrack or policy.sets or policy.nat, path  # a model worth comparing
        _assert_round_trip(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({"version": st.just(1)}, optional={
    "chains": st.dictionaries(st.sampled_from(["input", "output", "web", "x"]), policy_like, max_size=3),
    "notrack": st.lists(policy_like, max_size=3),
    "helpers": st.lists(policy_like, max_size=2),
    "nat": st.lists(policy_like, max_size=2),
}))
def test_fast_path_never_admits_what_jsonschema_rejects(doc):
    """The fastjsonschema yes/no path skips formats; the model builder must catch every bad value."""
    from ctkit.policy.load import _validator
    if _validator().is_valid(doc):
        return
    try:
        load_document(doc)
    except PolicyError:
        return
    raise AssertionError(f"loaded although jsonschema rejects it: {doc}")


def test_fast_path_and_jsonschema_agree_on_examples_and_bad_values():
    import yaml
    from goldens import EXAMPLES

    from ctkit.policy.load import _validator, fast_valid
    for path in EXAMPLES:
        doc = yaml.safe_load(path.read_text())
        assert fast_valid(doc) and _validator().is_valid(doc)
    bad = {"version": 1, "chains": {"input": {"rules": [{"saddr": "10.0.0.1/8"}]}}}
    assert not _validator().is_valid(bad)
    try:
        load_document(bad)
    except PolicyError as exc:
        assert exc.problems[0].pointer == "/chains/input/rules/0/saddr"
    else:
        raise AssertionError("a bad address loaded")


@settings(max_examples=500)
@given(st.one_of(
    st.ip_addresses(v=4).map(str),
    st.lists(st.integers(0, 300).map(str) | st.sampled_from(["00", "01", "007", "", "1e1", " 1"]),
             min_size=3, max_size=5).map(".".join)))
def test_parse_network_reads_ipv4_text_as_ipaddress_does(text):
    """parse_network's quick path for dotted quads (checks.canonical_ipv4) accepts and refuses the same
    texts as ipaddress.ip_network and returns the same network."""
    import ipaddress

    from ctkit.policy.checks import BadValue, parse_network
    try:
        want = ipaddress.ip_network(text)
    except ValueError:
        want = None
    try:
        got = parse_network(text)
    except BadValue:
        got = None
    assert got == want and type(got) is type(want)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["protocol", "protocols", "action", "jump", "goto", "name"]),
                       st.sampled_from(["tcp", ["udp"], "drop", "web", "x1"]), max_size=5))
def test_exclusive_pairs_keep_which_rules_are_valid(rule):
    """The fast validator's schema says "not: required pairs" as dependencies (schema_code.exclusive_pairs):
    it must accept and refuse the same rules as jsonschema with the schema as written."""
    from ctkit.policy.load import _validator, fast_valid
    doc = {"version": 1, "chains": {"web": {"rules": [rule]}}}
    assert fast_valid(doc) == _validator().is_valid(doc)
