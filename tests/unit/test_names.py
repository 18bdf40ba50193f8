from llmops.core.names import dns1035_problem, dns1123_problem
from llmops.core.names import k8s_name


def test_short_valid_name_is_kept():
    assert k8s_name("quickstart-20261129-051828") == "quickstart-20261129-051828"


def test_invalid_characters_are_replaced_and_leading_digit_fixed():
    n = k8s_name("My_Run.2026", 63)
    assert dns1035_problem(n) is None and n.startswith("my-run-2026")
    assert k8s_name("2026-run").startswith("x-")


def test_long_names_are_shortened_deterministically_with_hash():
    a = "gpt2-wikitext-lora-" + "x" * 60 + "-1"
    b = "gpt2-wikitext-lora-" + "x" * 60 + "-2"
    na, nb = k8s_name(a, 47), k8s_name(b, 47)
    assert len(na) <= 47 and len(nb) <= 47
    assert na != nb and na == k8s_name(a, 47)
    assert dns1035_problem(na) is None and dns1123_problem(nb) is None
