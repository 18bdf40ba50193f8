"""Adds this package's recipes and config options to Hydra's (and so llmops') search path."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class TeamDemoSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="llmops-team-demo", path="pkg://llmops_team_demo")
