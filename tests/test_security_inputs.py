"""Security and ownership defects of issue 16 that need no kernel: names, free text, byte lengths."""
import pytest

from ctkit.backends.nft import kernel as nft_kernel
from ctkit.errors import PolicyError, UsageError
from ctkit.kernel.netns import entered
from ctkit.ownership import check_prefix, check_table
from ctkit.policy.load import load_document


@pytest.mark.parametrize("name", ["ctkit; delete table ip foreign_t", "ctkit\n", "ctkit add", "ctkit\u212a",
                                  "ctkit}", "ctkit#"])
def test_table_names_with_tricks_are_refused_before_any_kernel_call(name):
    with pytest.raises(UsageError):
        check_table(name)
    # show and the exporter list the table: the name is checked before it reaches nft text
    with pytest.raises(UsageError):
        nft_kernel.list_table_text(name)
    with pytest.raises(UsageError):
        nft_kernel.list_table(name)


def test_prefix_with_trailing_newline_is_refused():
    with pytest.raises(UsageError):
        check_prefix("CTKIT-\n")


def test_empty_netns_name_is_an_error_not_the_host():
    for name in ("", "  "):
        with pytest.raises(UsageError):
            with entered(name):
                pass


def _rule(**kw):
    return {"version": 1, "chains": {"input": {"rules": [dict(action="drop", **kw)]}}}


@pytest.mark.parametrize("text", ["a\x00b", "a\rb", "a\nb", "\r-A INPUT -j ACCEPT", "a\x1bb", "a\u0085b",
                                  "a\u2028b", "a\tb"])
def test_control_characters_in_free_text_are_refused(text):
    with pytest.raises(PolicyError) as exc:
        load_document(_rule(comment=text))
    assert exc.value.problems[0].pointer == "/chains/input/rules/0/comment"
    assert "control character" in exc.value.problems[0].message


def test_interface_with_trailing_newline_is_refused():
    with pytest.raises(PolicyError):
        load_document(_rule(iif="eth0\n"))
    with pytest.raises(PolicyError):
        load_document({"version": 1, "table": "ctkit\n"})


@pytest.mark.parametrize("doc, pointer", [
    (_rule(comment="\U0001f600" * 17), "/chains/input/rules/0/comment"),
    (_rule(comment="é" * 33), "/chains/input/rules/0/comment"),
])
def test_byte_lengths_are_checked_in_bytes(doc, pointer):
    with pytest.raises(PolicyError) as exc:
        load_document(doc)
    assert exc.value.problems[0].pointer == pointer
    assert "bytes" in exc.value.problems[0].message


def test_log_prefix_counted_in_bytes():
    doc = {"version": 1, "chains": {"input": {"rules": [
        {"action": "drop", "log": {"prefix": "é" * 64}}]}}}
    with pytest.raises(PolicyError) as exc:
        load_document(doc)
    assert "bytes" in exc.value.problems[0].message
    doc["chains"]["input"]["rules"][0]["log"]["prefix"] = "é" * 63
    load_document(doc)


def test_ascii_comment_of_the_full_length_still_loads():
    load_document(_rule(comment="x" * 64))
