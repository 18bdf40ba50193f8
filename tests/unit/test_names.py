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


def test_names_differing_only_in_case_or_punctuation_get_distinct_kubernetes_names():
    names = ["my-run", "My_Run", "my.run", "MY-RUN", "my--run", "my_run", "x-my-run", "1-run", "x-1-run"]
    for limit in (63, 47, 45):
        derived = [k8s_name(n, limit) for n in names]
        assert len(set(derived)) == len(names), derived
        assert all(dns1035_problem(d, limit) is None for d in derived)
    assert k8s_name("my-run") == "my-run"  # a valid name is kept as it is


def test_path_component_rule():
    from llmops.core.names import path_component_problem

    for ok in ("quickstart", "gpt2-wikitext-lora", "a=b", "x,y", "run_1.2", "a" * 255):
        assert path_component_problem(ok) is None, ok
    for bad, why in [("", "non-empty"), (".", "not a name"), ("..", "not a name"),
                     ("../../x", "path separator"), ("/abs", "path separator"), ("a\\b", "separator"),
                     ("a b", "characters"), (".hidden", "characters"), ("-flag", "characters"),
                     ("a\nb", "characters"), ("a" * 256, "256 bytes"), ("é" * 128, "256 bytes")]:
        assert why in path_component_problem(bad), bad
