"""Hydra config source for `s3://bucket/prefix/`: team recipes and options kept in S3, read-only.

With this plugin installed, `hydra.searchpath=[s3://bucket/recipes]` (or an `s3://` entry on
LLMOPS_RECIPE_PATH) makes Hydra read config groups from the bucket: `s3://bucket/recipes/model/
team_gpt.yaml` is the option `model=team_gpt`. It only lists and reads objects. The endpoint and
credentials come from boto3's usual environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).
boto3 is imported on first use, not when Hydra scans its plugins.
"""

from typing import List, Optional

from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from omegaconf import OmegaConf


class S3ConfigSource(ConfigSource):
    def __init__(self, provider: str, path: str) -> None:
        if path.find("://") == -1:
            path = f"{self.scheme()}://{path}"
        super().__init__(provider=provider, path=path)
        self._src = None

    @staticmethod
    def scheme() -> str:
        return "s3"

    @property
    def src(self):
        if self._src is None:
            from llmops.config.sources import s3_source

            self._src = s3_source(f"s3://{self.path}")
        return self._src

    def load_config(self, config_path: str) -> ConfigResult:
        from llmops.core.errors import LLMOpsError

        rel = self._normalize_file_name(config_path)
        try:
            if not self.src.exists(rel):
                raise ConfigLoadError(f"Config not found : s3://{self.path.rstrip('/')}/{rel}")
            text = self.src.read_yaml_text(rel)  # refused when over the YAML bounds
        except LLMOpsError as e:
            raise ConfigLoadError(str(e)) from None
        return ConfigResult(config=OmegaConf.create(text) if text.strip() else OmegaConf.create({}),
                            path=f"s3://{self.path}", provider=self.provider,
                            header=ConfigSource._get_header_dict(text[:512]))

    def available(self) -> bool:
        from llmops.core.errors import LLMOpsError

        try:
            self.src.check()
            return True
        except LLMOpsError:
            return False

    def is_group(self, config_path: str) -> bool:
        from llmops.core.errors import LLMOpsError

        rel = config_path.strip("/")
        try:
            if rel == "":
                self.src.check()
                return True
            parent, _, name = rel.rpartition("/")
            return name in self.src.list_dirs(parent)
        except LLMOpsError:
            return False

    def is_config(self, config_path: str) -> bool:
        from llmops.core.errors import LLMOpsError

        try:
            return self.src.exists(self._normalize_file_name(config_path))
        except LLMOpsError:
            return False

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        rel = config_path.strip("/")
        files: List[str] = []
        for d in self.src.list_dirs(rel):
            if results_filter in (None, ObjectType.GROUP):
                files.append(d)
        for n in self.src.list_names(rel):
            if results_filter in (None, ObjectType.CONFIG):
                files.append(n)
        return sorted(set(files))
