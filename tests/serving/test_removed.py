"""Options today's OpenShift AI removed: one `warning:` line at validate, plan and run, naming
what upstream removed and the override to use instead; the 2023 path still works."""

from __future__ import annotations

import json

import pytest

from llmops import cli

CAIKIT = ("warning: serving=caikit_tgis: Open Data Hub removed the Caikit-TGIS runtime template in 2025-10 "
          "(odh-model-controller #579); it still deploys as a custom ServingRuntime; today's path is "
          "serving=vllm (or serving=llmisvc)")


def _warnings(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("warning:")]


def test_validate_the_2023_recipe_warns_once_and_passes(capsys):
    assert cli.main(["validate", "gpt2-wikitext"]) == 0
    out, err = capsys.readouterr()
    assert _warnings(err) == [CAIKIT] and "gpt2-wikitext: ok" in out


def test_todays_path_has_no_warning(capsys):
    assert cli.main(["validate", "quickstart"]) == 0
    assert cli.main(["validate", "quickstart", "serving=llmisvc"]) == 0
    assert _warnings(capsys.readouterr().err) == []


@pytest.mark.parametrize("overrides, setting, instead", [
    (["serving=tgis"], "serving=tgis", "today's path is serving=vllm (or serving=llmisvc)"),
    (["serving=vllm", "serving.deployment_mode=Serverless"], "serving.deployment_mode=Serverless",
     "use serving.deployment_mode=RawDeployment"),
    (["serving=vllm", "+serving.labels.modelmesh-enabled=true"], "serving.labels.modelmesh-enabled=true",
     "drop the label (serving=vllm or serving=llmisvc)"),
])
def test_each_removed_option_names_its_replacement(overrides, setting, instead, capsys):
    assert cli.main(["validate", "quickstart", *overrides]) == 0
    (line,) = _warnings(capsys.readouterr().err)
    assert line.startswith(f"warning: {setting}: Open Data Hub ") and line.endswith(instead)


def test_plan_warns_on_stderr_and_keeps_json_clean(capsys):
    assert cli.main(["plan", "quickstart", "serving=caikit_tgis", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert _warnings(err) == [CAIKIT]
    plan = json.loads(out)  # stdout is still the plan alone
    kinds = [o["kind"] for s in plan["stages"] for o in s.get("objects", [])]
    assert "ServingRuntime" in kinds  # the 2023 path still renders


def test_run_warns_before_any_stage(tmp_path):
    """The real CLI in a subprocess: the warning comes before the first stage's output."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([sys.executable, "-m", "llmops.cli", "run", "quickstart", "serving=caikit_tgis",
                        "stages=[deploy]", f"paths.output_root={tmp_path}", f"paths.cache_dir={tmp_path / 'c'}",
                        f"storage.root={tmp_path / 'models'}"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=300)
    err = p.stdout  # warnings (stderr) and the stage log, in the order they were written
    assert _warnings(err) == [CAIKIT], err[-2000:]
    assert err.index("warning:") < err.index("stage deploy"), err[-2000:]
