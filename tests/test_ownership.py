"""ctkit only ever takes tables and chains named for it."""
import pytest

from ctkit.backends.iptables import kernel as ipt_kernel
from ctkit.backends.nft import kernel as nft_kernel
from ctkit.errors import PolicyError, UsageError
from ctkit.names import chain_prefix
from ctkit.ownership import TABLE_PATTERN, check_prefix, check_table
from ctkit.policy.load import load_document, policy_schema


def test_schema_pattern_is_the_ownership_rule():
    assert policy_schema()["properties"]["table"]["pattern"] == TABLE_PATTERN


@pytest.mark.parametrize("name", ["docker", "firewalld", "kube", "filter", "nat", "xctkit", "ctk"])
def test_other_owners_names_are_refused_everywhere(name):
    with pytest.raises(UsageError):
        check_table(name)
    with pytest.raises(PolicyError):
        load_document({"version": 1, "table": name})
    # the kernel stage refuses before it opens any socket or runs any tool
    with pytest.raises(UsageError):
        nft_kernel.delete_table(name)
    with pytest.raises(UsageError):
        ipt_kernel.remove(name.upper() + "-")


@pytest.mark.parametrize("name", ["ctkit", "ctkit_lab", "ctkit2"])
def test_ctkit_names_are_accepted(name):
    assert check_table(name) == name
    assert check_prefix(chain_prefix(name)) == chain_prefix(name)
